// Test equipment, not part of the device: flips one bit on a UART line now and then.
// It follows the line as a receiver would (start edge, ten bit times) and, for a byte
// whose draw from a xorshift32 generator falls below `rate` (out of 65536), inverts the
// line for the whole duration of one of the ten bits (start, data or stop). (A one-step
// LFSR was used before: its consecutive 16-bit draws are shifts of each other, so a draw
// below `rate` was mostly followed by more, and flips came in bursts on adjacent bytes of
// one frame instead of independently per byte.)
module line_fault #(
    parameter CLKS_PER_BIT = 8
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        line_in,
    input  wire [15:0] rate,
    input  wire [31:0] seed,
    output wire        line_out,
    output reg  [31:0] flips
);
    reg [31:0] rng;
    reg        busy, hit, prev;
    reg [15:0] t;
    reg [3:0]  pos;
    wire [31:0] xs1       = rng ^ (rng << 13);
    wire [31:0] xs2       = xs1 ^ (xs1 >> 17);
    wire [31:0] rng_next  = xs2 ^ (xs2 << 5);          // xorshift32 (never 0 from a non-zero seed)
    wire [3:0]  draw_pos  = (rng_next[23:20] < 4'd10) ? rng_next[23:20] : rng_next[23:20] - 4'd6;
    wire [15:0] lo        = {12'd0, pos} * CLKS_PER_BIT;
    wire        in_bit    = (t >= lo) && (t < lo + CLKS_PER_BIT);

    assign line_out = line_in ^ (busy && hit && in_bit);

    always @(posedge clk) begin
        prev <= line_in;
        if (rst) begin
            rng <= (seed == 32'd0) ? 32'h1 : seed;
            busy <= 1'b0; hit <= 1'b0; t <= 0; pos <= 0; flips <= 0; prev <= 1'b1;
        end else if (!busy) begin
            if (prev && !line_in) begin        // start edge
                rng <= rng_next;
                hit  <= (rng_next[15:0] < rate);
                pos  <= draw_pos;
                busy <= 1'b1;
                t    <= 16'd1;
                if (rng_next[15:0] < rate) flips <= flips + 1;
            end
        end else begin
            t <= t + 1'b1;
            if (t == 10 * CLKS_PER_BIT - 1) busy <= 1'b0;
        end
    end
endmodule
