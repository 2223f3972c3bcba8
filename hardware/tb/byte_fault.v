// Test equipment, not part of the device: on the simulation's wide link (bytes, no UART), flips
// one bit of a byte with probability rate/65536, drawn per byte from a xorshift32 generator.
module byte_fault (
    input  wire        clk,
    input  wire        rst,
    input  wire [7:0]  in_byte,
    input  wire        in_valid,
    input  wire [15:0] rate,
    input  wire [31:0] seed,
    output wire [7:0]  out_byte,
    output wire        out_valid,
    output reg  [31:0] flips
);
    reg  [31:0] rng;
    wire [31:0] xs1      = rng ^ (rng << 13);
    wire [31:0] xs2      = xs1 ^ (xs1 >> 17);
    wire [31:0] rng_next = xs2 ^ (xs2 << 5);
    wire        hit      = in_valid && (rng_next[15:0] < rate);
    assign out_byte  = in_byte ^ (hit ? (8'd1 << rng_next[18:16]) : 8'd0);
    assign out_valid = in_valid;
    always @(posedge clk)
        if (rst) begin
            rng   <= (seed == 32'd0) ? 32'h1 : seed;
            flips <= 0;
        end else if (in_valid) begin
            rng <= rng_next;
            if (hit) flips <= flips + 1;
        end
endmodule
