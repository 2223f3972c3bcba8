// IEEE-754 binary32 multiply, combinational. Rounding: to nearest, ties to even, on the
// 24-bit significand with an unbounded exponent; then a result below the smallest normal
// (2^-126) is flushed to a signed zero, and a result of 2^128 or more becomes infinity.
// Subnormal inputs are read as zero (DAZ). NaN and infinity inputs are not supported:
// training data is finite (docs/HARDWARE.md, "fp32 arithmetic").
module fp32_mul (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output reg  [31:0] y
);
    wire        s  = a[31] ^ b[31];
    wire [7:0]  ea = a[30:23], eb = b[30:23];
    wire [47:0] p  = {1'b1, a[22:0]} * {1'b1, b[22:0]};
    reg  [22:0] m;
    reg         g, st, up;
    reg  [9:0]  e;            // signed, biased
    reg  [23:0] mr;
    always @* begin
        if (p[47]) begin
            m = p[46:24]; g = p[23]; st = |p[22:0];
            e = {2'b00, ea} + {2'b00, eb} - 10'd126;
        end else begin
            m = p[45:23]; g = p[22]; st = |p[21:0];
            e = {2'b00, ea} + {2'b00, eb} - 10'd127;
        end
        up = g & (st | m[0]);
        mr = {1'b0, m} + {23'd0, up};
        if (mr[23]) e = e + 10'd1;          // 1.111..1 rounded up to 10.000..0
        if (ea == 8'd0 || eb == 8'd0 || e[9] || e == 10'd0)
            y = {s, 31'd0};                  // zero operand, or flushed below 2^-126
        else if (e >= 10'd255)
            y = {s, 8'hFF, 23'd0};
        else
            y = {s, e[7:0], mr[22:0]};
    end
endmodule
