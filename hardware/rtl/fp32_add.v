// IEEE-754 binary32 add, combinational, with the rounding and flushing of fp32_mul:
// round to nearest even (guard, round and sticky bits), results below 2^-126 flushed to
// a signed zero, subnormal inputs read as zero, overflow to infinity, x + (-x) = +0.
module fp32_add (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output reg  [31:0] y
);
    wire        za = (a[30:23] == 8'd0), zb = (b[30:23] == 8'd0);
    wire        a_big = (a[30:0] >= b[30:0]);
    wire [31:0] x = a_big ? a : b;        // larger magnitude
    wire [31:0] w = a_big ? b : a;
    wire [7:0]  d = x[30:23] - w[30:23];
    wire [26:0] mx = {1'b1, x[22:0], 3'b000};
    wire [26:0] mw = {1'b1, w[22:0], 3'b000};
    reg  [26:0] sh;
    reg  [27:0] sum;
    reg  [26:0] n;
    reg  [4:0]  lz;
    reg  [9:0]  e;
    reg  [22:0] m;
    reg         g, r, st, up;
    reg  [23:0] mr;
    // leading zeros of the 27-bit sum (a function, so no loop variable is left for a latch)
    function [4:0] lzc27;
        input [26:0] v;
        integer k;
        reg     found;
        begin
            lzc27 = 5'd0;
            found = 1'b0;
            for (k = 26; k >= 0; k = k - 1)
                if (!found) begin
                    if (v[k]) found = 1'b1;
                    else lzc27 = lzc27 + 5'd1;
                end
        end
    endfunction
    always @* begin
        lz = 5'd0;
        // align: shift the smaller operand, keeping a sticky bit of what falls off
        if (d >= 8'd27) sh = 27'd1;
        else begin
            sh = mw >> d;
            sh[0] = sh[0] | ((mw & ((27'd1 << d) - 27'd1)) != 27'd0);
        end
        sum = (x[31] == w[31]) ? {1'b0, mx} + {1'b0, sh} : {1'b0, mx} - {1'b0, sh};
        e = {2'b00, x[30:23]};
        if (sum[27]) begin
            n = {sum[27:2], sum[1] | sum[0]};
            e = e + 10'd1;
        end else begin
            lz = lzc27(sum[26:0]);
            n = sum[26:0] << lz;
            e = e - {5'd0, lz};
        end
        m = n[25:3]; g = n[2]; r = n[1]; st = n[0];
        up = g & (r | st | m[0]);
        mr = {1'b0, m} + {23'd0, up};
        if (mr[23]) e = e + 10'd1;
        if (za && zb)
            y = {a[31] & b[31], 31'd0};
        else if (za)
            y = b;
        else if (zb)
            y = a;
        else if (sum == 28'd0)
            y = 32'd0;                           // exact cancellation: +0 when rounding to nearest
        else if (e[9] || e == 10'd0)
            y = {x[31], 31'd0};                  // flushed below 2^-126
        else if (e >= 10'd255)
            y = {x[31], 8'hFF, 23'd0};
        else
            y = {x[31], e[7:0], mr[22:0]};
    end
endmodule
