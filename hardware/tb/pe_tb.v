`timescale 1ns/1ps
// Simulation top of the PE core: a clock and the core. cocotb loads the memories through the
// core's load port (or, for speed on large cases, by writing the memory arrays directly) and
// reads the results through its result port.
module pe_tb #(
    parameter ROWS = 8,
    parameter COLS = 8,
    parameter LDW  = (32 * ROWS * COLS > 48) ? 32 * ROWS * COLS : 48
) (
    input  wire        rst,
    input  wire        start,
    input  wire [1:0]  mode,
    input  wire [4:0]  n_img,
    input  wire [6:0]  h,
    input  wire [6:0]  w,
    input  wire [15:0] c_in,
    input  wire [15:0] k_out,
    input  wire [1:0]  ks,
    input  wire [7:0]  ct,
    input  wire [7:0]  kt,
    output wire        busy,
    output wire        done,
    output wire [31:0] cycles,
    output wire [31:0] macs,
    output wire [31:0] terms,
    output wire [31:0] tiles,
    input  wire        ld_we,
    input  wire [1:0]  ld_sel,
    input  wire [15:0] ld_addr,
    input  wire [LDW-1:0] ld_data,
    input  wire [10:0] out_ra,
    output wire [32*ROWS*COLS-1:0] out_rd
);
    /* verilator lint_off PROCASSINIT */
    reg clk = 1'b0;
    /* verilator lint_on PROCASSINIT */
    always #5 clk = ~clk;
    pe_core #(.ROWS(ROWS), .COLS(COLS), .PAW(10), .LAW(14), .VAW(11), .OAW(11), .LDW(LDW)) u_core (
        .clk(clk), .rst(rst), .start(start), .mode(mode), .n_img(n_img), .h(h), .w(w), .c_in(c_in),
        .k_out(k_out), .ks(ks), .ct(ct), .kt(kt), .busy(busy), .done(done), .cycles(cycles), .macs(macs),
        .terms(terms), .tiles(tiles), .ld_we(ld_we), .ld_sel(ld_sel), .ld_addr(ld_addr), .ld_data(ld_data),
        .out_ra(out_ra), .out_rd(out_rd));
endmodule
