// L fp32 lanes of block RAM side by side: one word (all lanes) is read per cycle at one
// address; a write goes to one address with a write enable per lane, so a single lane of a
// word can be written (the CPU's lane access, the transposed weight copy).
module ram_lanes #(
    parameter L  = 16,
    parameter AW = 10
) (
    input  wire            clk,
    input  wire [L-1:0]    we,
    input  wire [AW-1:0]   waddr,
    input  wire [32*L-1:0] wdata,
    input  wire [AW-1:0]   raddr,
    output wire [32*L-1:0] rdata
);
    genvar j;
    generate for (j = 0; j < L; j = j + 1) begin : lane
        ram_sdp #(.AW(AW), .DW(32)) u_ram (.clk(clk), .we(we[j]), .waddr(waddr), .wdata(wdata[32*j +: 32]),
            .raddr(raddr), .rdata(rdata[32*j +: 32]));
    end endgenerate
endmodule
