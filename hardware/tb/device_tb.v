`timescale 1ns/1ps
// Simulation top of the whole device (cocotb drives it; not for synthesis): the host's side of
// the serial line as mailboxes (Python writes h2d_mem then h2d_wr, reads d2h_mem up to d2h_wr),
// bit flips on both directions, and device_top. BYTE_PORT = 0: every byte crosses a UART bit by
// bit (line_fault flips a bit anywhere from start to stop bit); BYTE_PORT = 1: the wide link,
// one byte per BYTE_CLKS cycles straight into the link's framing (byte_fault flips a data bit),
// ten times faster for the long runs (emulator --rtl); the UART itself is tested at real bit
// timing by the link tests.
module device_tb #(
    parameter CLKS_PER_BIT = 4,
    parameter IDLE_CLKS    = 2000,
    parameter MAX_PAYLOAD  = 4096,
    parameter BUF_AW       = 13,
    parameter STAGE_AW     = 18,
    parameter RES_AW       = 18,
    parameter RAM_AW       = 14,
    parameter CLOCK_HZ     = 25000000,
    parameter L            = 16,
    parameter LB           = 4,
    parameter NMAX         = 32,
    parameter MB_AW        = 14,
    parameter BYTE_PORT    = 0,
    parameter BYTE_CLKS    = 4
) (
    input  wire        rst,
    input  wire [31:0] h2d_wr,
    output reg  [31:0] h2d_rd,
    output reg  [31:0] d2h_wr,
    input  wire [15:0] fault_rate,
    input  wire [31:0] fault_seed,
    output wire [31:0] flips_h2d,
    output wire [31:0] flips_d2h,
    input  wire [31:0] entropy,
    output wire        trap
);
    /* verilator lint_off PROCASSINIT */
    reg clk = 1'b0;
    /* verilator lint_on PROCASSINIT */
    always #5 clk = ~clk;

    /* verilator lint_off UNDRIVEN */
    reg  [7:0] h2d_mem [0:(1 << MB_AW) - 1];   // written by Python
    /* verilator lint_on UNDRIVEN */
    reg  [7:0] d2h_mem [0:(1 << MB_AW) - 1];
    wire [7:0] h2d_byte = h2d_mem[h2d_rd[MB_AW-1:0]];
    wire       dev_rx, dev_tx, host_line, bp_hvalid, bp_dvalid;
    wire [7:0] bp_hbyte, bp_dbyte;
    wire       d2h_valid;
    wire [7:0] d2h_byte;
    generate if (BYTE_PORT) begin : wide
        reg [7:0] gap;
        wire      go = (h2d_rd != h2d_wr) && (gap == 0) && !rst;
        always @(posedge clk)
            if (rst) begin h2d_rd <= 32'd0; gap <= 0; end
            else if (go) begin h2d_rd <= h2d_rd + 1; gap <= BYTE_CLKS - 1; end
            else if (gap != 0) gap <= gap - 1'b1;
        byte_fault u_fh2d (.clk(clk), .rst(rst), .in_byte(h2d_byte), .in_valid(go), .rate(fault_rate),
            .seed(fault_seed), .out_byte(bp_hbyte), .out_valid(bp_hvalid), .flips(flips_h2d));
        byte_fault u_fd2h (.clk(clk), .rst(rst), .in_byte(bp_dbyte), .in_valid(bp_dvalid), .rate(fault_rate),
            .seed(~fault_seed), .out_byte(d2h_byte), .out_valid(d2h_valid), .flips(flips_d2h));
        assign host_line = 1'b1;
        assign dev_rx    = 1'b1;
    end else begin : serial
        wire htx_ready;
        wire htx_go = (h2d_rd != h2d_wr) && htx_ready && !rst;
        uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_htx (.clk(clk), .rst(rst), .data(h2d_byte),
            .valid(htx_go), .ready(htx_ready), .tx(host_line));
        always @(posedge clk)
            if (rst) h2d_rd <= 32'd0;
            else if (htx_go) h2d_rd <= h2d_rd + 1;
        line_fault #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_fh2d (.clk(clk), .rst(rst), .line_in(host_line),
            .rate(fault_rate), .seed(fault_seed), .line_out(dev_rx), .flips(flips_h2d));
        wire d2h_line, hrx_ferr;
        line_fault #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_fd2h (.clk(clk), .rst(rst), .line_in(dev_tx),
            .rate(fault_rate), .seed(~fault_seed), .line_out(d2h_line), .flips(flips_d2h));
        uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_hrx (.clk(clk), .rst(rst), .rx(d2h_line), .data(d2h_byte),
            .valid(d2h_valid), .frame_err(hrx_ferr));
        assign bp_hbyte  = 8'd0;
        assign bp_hvalid = 1'b0;
    end endgenerate

    device_top #(.CLKS_PER_BIT(CLKS_PER_BIT), .IDLE_CLKS(IDLE_CLKS), .MAX_PAYLOAD(MAX_PAYLOAD), .BUF_AW(BUF_AW),
                 .STAGE_AW(STAGE_AW), .RES_AW(RES_AW), .RAM_AW(RAM_AW), .CLOCK_HZ(CLOCK_HZ), .L(L), .LB(LB),
                 .NMAX(NMAX), .BYTE_PORT(BYTE_PORT)) u_dev (
        .clk(clk), .rst(rst), .uart_rx(dev_rx), .uart_tx(dev_tx), .entropy(entropy), .host_byte(bp_hbyte),
        .host_valid(bp_hvalid), .dev_byte(bp_dbyte), .dev_valid(bp_dvalid), .dev_ready(1'b1), .trap(trap));

    always @(posedge clk)
        if (rst) d2h_wr <= 32'd0;
        else if (d2h_valid) begin
            d2h_mem[d2h_wr[MB_AW-1:0]] <= d2h_byte;
            d2h_wr <= d2h_wr + 1;
        end
endmodule
