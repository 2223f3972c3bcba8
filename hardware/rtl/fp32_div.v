// IEEE-754 binary32 divide, sequential (one quotient bit per cycle, 27 cycles), for the
// control processor's scalar FPU (softmax ratios, the batch mean). Rounding and flushing
// as fp32_mul: nearest even on 24 bits, a quotient below 2^-126 flushed to a signed zero,
// subnormal inputs read as zero, overflow and x/0 give infinity. NaN is not produced or
// supported (0/0 gives zero).
module fp32_div (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire        busy,
    output reg  [31:0] y
);
    reg  [4:0]  cnt;
    reg         s;
    reg  [9:0]  e;            // signed, biased
    reg  [25:0] rem;
    reg  [23:0] mb;
    reg  [24:0] q;            // 24 significand bits and the guard bit
    reg         zero_a, zero_b;
    assign busy = (cnt != 5'd0);

    wire [25:0] diff   = rem - {2'b00, mb};
    wire        ge     = !diff[25];
    wire        sticky = (rem != 26'd0);
    wire        up     = q[0] & (sticky | q[1]);
    wire [24:0] mr     = {1'b0, q[24:1]} + {24'd0, up};
    wire [9:0]  er     = mr[24] ? e + 10'd1 : e;

    always @(posedge clk) begin
        if (rst) begin
            cnt <= 0; s <= 0; e <= 0; rem <= 0; mb <= 0; q <= 0; zero_a <= 0; zero_b <= 0; y <= 0;
        end else if (start && cnt == 5'd0) begin
            s      <= a[31] ^ b[31];
            zero_a <= (a[30:23] == 8'd0);
            zero_b <= (b[30:23] == 8'd0);
            mb     <= {1'b1, b[22:0]};
            // the quotient of the significands is in [0.5, 2): start with it in [1, 2)
            if ({1'b1, a[22:0]} < {1'b1, b[22:0]}) begin
                rem <= {1'b0, 1'b1, a[22:0], 1'b0};
                e   <= {2'b00, a[30:23]} - {2'b00, b[30:23]} + 10'd126;
            end else begin
                rem <= {2'b00, 1'b1, a[22:0]};
                e   <= {2'b00, a[30:23]} - {2'b00, b[30:23]} + 10'd127;
            end
            q   <= 0;
            cnt <= 5'd26;
        end else if (cnt > 5'd1) begin
            q   <= {q[23:0], ge};
            rem <= (ge ? diff : rem) << 1;
            cnt <= cnt - 1'b1;
        end else if (cnt == 5'd1) begin
            cnt <= 0;
            if (zero_a)
                y <= {s, 31'd0};
            else if (zero_b || (!er[9] && er >= 10'd255))
                y <= {s, 8'hFF, 23'd0};
            else if (er[9] || er == 10'd0)
                y <= {s, 31'd0};
            else
                y <= {s, er[7:0], mr[22:0]};
        end
    end
endmodule
