// One PE lane of the training array: a registered fp32 product and an fp32 accumulator.
// Stage 1 multiplies the broadcast scalar by this lane's vector element; stage 2 adds the
// product to the accumulator (or, for a load, replaces it: fmul(1, x) = x, so a load of a
// bias or a weight goes through the same multiplier). Disabled lanes keep their value.
module lane_mac (
    input  wire        clk,
    input  wire        rst,
    input  wire        valid,      // an operation enters stage 1
    input  wire        en,         // this lane takes part
    input  wire        load,       // replace instead of accumulate
    input  wire        clear,      // accumulator := +0 (no operation in flight)
    input  wire [31:0] a,          // broadcast scalar
    input  wire [31:0] v,          // this lane's vector element
    output reg  [31:0] acc
);
    wire [31:0] prod, sum;
    reg  [31:0] prod_q;
    reg         go_q, load_q;
    fp32_mul u_mul (.a(a), .b(v), .y(prod));
    fp32_add u_add (.a(acc), .b(prod_q), .y(sum));
    always @(posedge clk) begin
        if (rst) begin
            prod_q <= 0; go_q <= 0; load_q <= 0; acc <= 0;
        end else begin
            prod_q <= prod;
            go_q   <= valid && en;
            load_q <= load;
            if (clear) acc <= 32'd0;
            else if (go_q) acc <= load_q ? prod_q : sum;
        end
    end
endmodule
