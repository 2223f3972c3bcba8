`timescale 1ns/1ps
// Simulation top of the link layer (cocotb drives it; not for synthesis).
//
//  h2d mailbox -> host uart_tx -> line_fault -> device_link.uart_rx
//                                            \-> standalone frame receiver (uart_rx, cobs_rx, buffer)
//  d2h mailbox <- host uart_rx <- line_fault <- device_link.uart_tx
//  standalone frame transmitter (buffer, cobs_tx, uart_tx) -> enc_line
//
// The mailboxes let Python move whole byte strings per call (it writes h2d_mem and
// then h2d_wr; it reads d2h_mem up to d2h_wr) while every byte still crosses a UART
// bit by bit. ext_line_en puts a Python-driven line (cocotbext-uart) on both receivers.
module link_tb #(
    parameter CLKS_PER_BIT = 8,
    parameter IDLE_CLKS    = 2000,
    parameter MAX_PAYLOAD  = 4096,
    parameter BUF_AW       = 13,
    parameter STAGE_AW     = 12,
    parameter RES_AW       = 12,
    parameter MB_AW        = 14
) (
    input  wire        rst,
    input  wire [31:0] h2d_wr,
    output reg  [31:0] h2d_rd,
    output reg  [31:0] d2h_wr,
    input  wire        ext_line_en,
    input  wire        ext_line,
    input  wire [15:0] fault_rate,
    input  wire [31:0] fault_seed,
    output wire [31:0] flips_h2d,
    output wire [31:0] flips_d2h,
    input  wire [31:0] entropy,
    // compute core, driven by Python
    output wire        core_req,
    output wire [7:0]  core_type,
    output wire [15:0] core_len,
    output wire [31:0] session_id,
    output wire [31:0] step,
    output wire [15:0] max_payload,
    input  wire        core_done,
    input  wire [7:0]  core_rsp_type,
    input  wire [15:0] core_rsp_len,
    input  wire        core_step_we,
    input  wire [31:0] core_step,
    input  wire        core_ready_we,
    input  wire        core_ready,
    input  wire        core_result_we,
    input  wire [31:0] core_result_len,
    input  wire [1:0]  core_sel,
    input  wire [31:0] core_addr,
    input  wire [7:0]  core_wdata,
    input  wire        core_we,
    output wire [7:0]  core_rdata,
    // standalone receiver
    output wire        sa_frame_ok,
    output wire [15:0] sa_len,
    output wire [7:0]  sa_type,
    output wire [15:0] sa_seq,
    output wire [31:0] sa_pcrc,
    // standalone transmitter
    input  wire        enc_start,
    input  wire [15:0] enc_len,
    output wire        enc_busy,
    output wire        enc_line
);
    /* verilator lint_off PROCASSINIT */
    reg clk = 1'b0;
    /* verilator lint_on PROCASSINIT */
    always #5 clk = ~clk;

    // -- host side: h2d mailbox and UART ----------------------------------------------
    /* verilator lint_off UNDRIVEN */
    reg  [7:0] h2d_mem [0:(1 << MB_AW) - 1];   // written by Python
    /* verilator lint_on UNDRIVEN */
    reg  [7:0] d2h_mem [0:(1 << MB_AW) - 1];
    wire       htx_ready, host_line;
    wire       htx_go = (h2d_rd != h2d_wr) && htx_ready && !rst;
    uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_htx (.clk(clk), .rst(rst), .data(h2d_mem[h2d_rd[MB_AW-1:0]]),
        .valid(htx_go), .ready(htx_ready), .tx(host_line));
    always @(posedge clk)
        if (rst) h2d_rd <= 32'd0;
        else if (htx_go) h2d_rd <= h2d_rd + 1;

    wire h2d_line;
    line_fault #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_fh2d (.clk(clk), .rst(rst), .line_in(host_line),
        .rate(fault_rate), .seed(fault_seed), .line_out(h2d_line), .flips(flips_h2d));
    wire dev_rx = ext_line_en ? ext_line : h2d_line;

    // -- the device -------------------------------------------------------------------------
    wire dev_tx;
    wire [7:0] bp_byte;       // the byte port is not used here: the UART is what this bench tests
    wire       bp_valid;
    wire [31:0] c0, c1, c2, c3, c4, c5, c6, c7, c8, c9;
    device_link #(.CLKS_PER_BIT(CLKS_PER_BIT), .IDLE_CLKS(IDLE_CLKS), .MAX_PAYLOAD(MAX_PAYLOAD),
                  .BUF_AW(BUF_AW), .STAGE_AW(STAGE_AW), .RES_AW(RES_AW)) u_dev (
        .clk(clk), .rst(rst), .uart_rx_pin(dev_rx), .uart_tx_pin(dev_tx), .entropy(entropy),
        .host_byte(8'd0), .host_valid(1'b0), .dev_byte(bp_byte), .dev_valid(bp_valid), .dev_ready(1'b0),
        .core_req(core_req), .core_type(core_type), .core_len(core_len), .session_id(session_id),
        .step(step), .max_payload(max_payload), .core_done(core_done), .core_rsp_type(core_rsp_type),
        .core_rsp_len(core_rsp_len), .core_step_we(core_step_we), .core_step(core_step),
        .core_ready_we(core_ready_we), .core_ready(core_ready), .core_result_we(core_result_we),
        .core_result_len(core_result_len), .core_sel(core_sel), .core_addr(core_addr),
        .core_wdata(core_wdata), .core_we(core_we), .core_rdata(core_rdata),
        .cnt_rx_frames(c0), .cnt_tx_frames(c1), .cnt_duplicates(c2), .cnt_errors_sent(c3),
        .cnt_bad_cobs(c4), .cnt_bad_crc(c5), .cnt_overruns(c6), .cnt_idle_resets(c7),
        .cnt_busy_drops(c8), .cnt_uart_errors(c9));

    // -- host side: d2h UART and mailbox ------------------------------------------------------
    wire d2h_line;
    line_fault #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_fd2h (.clk(clk), .rst(rst), .line_in(dev_tx),
        .rate(fault_rate), .seed(~fault_seed), .line_out(d2h_line), .flips(flips_d2h));
    wire [7:0] hrx_byte;
    wire       hrx_valid, hrx_ferr;
    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_hrx (.clk(clk), .rst(rst), .rx(d2h_line), .data(hrx_byte),
        .valid(hrx_valid), .frame_err(hrx_ferr));
    always @(posedge clk)
        if (rst) d2h_wr <= 32'd0;
        else if (hrx_valid) begin
            d2h_mem[d2h_wr[MB_AW-1:0]] <= hrx_byte;
            d2h_wr <= d2h_wr + 1;
        end

    // -- standalone frame receiver on the same line ---------------------------------------------
    wire [7:0]        sa_byte, sa_ver;
    wire              sa_valid, sa_ferr, sa_we;
    wire [BUF_AW-1:0] sa_wa;
    wire [7:0]        sa_wd;
    wire [31:0]       s0, s1, s2, s3, s4, s5;
    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_sarx (.clk(clk), .rst(rst), .rx(dev_rx), .data(sa_byte),
        .valid(sa_valid), .frame_err(sa_ferr));
    cobs_rx #(.MAX_PAYLOAD(MAX_PAYLOAD), .AW(BUF_AW), .IDLE_CLKS(IDLE_CLKS)) u_sadec (
        .clk(clk), .rst(rst), .in_data(sa_byte), .in_valid(sa_valid), .hold(1'b0),
        .wr_addr(sa_wa), .wr_data(sa_wd), .wr_en(sa_we), .frame_ok(sa_frame_ok), .f_ver(sa_ver),
        .f_type(sa_type), .f_seq(sa_seq), .f_len(sa_len), .f_pcrc(sa_pcrc),
        .cnt_frames(s0), .cnt_bad_cobs(s1), .cnt_bad_crc(s2), .cnt_overruns(s3), .cnt_idle(s4), .cnt_busy(s5));
    wire [7:0] sa_rd_unused;
    ram_sdp #(.AW(BUF_AW)) u_sabuf (.clk(clk), .we(sa_we), .waddr(sa_wa), .wdata(sa_wd),
        .raddr({BUF_AW{1'b0}}), .rdata(sa_rd_unused));

    // -- standalone frame transmitter ----------------------------------------------------------
    wire [BUF_AW-1:0] enc_ra;
    wire [7:0]        enc_rd, enc_byte;
    wire              enc_valid, enc_ready;
    reg               enc_start_q;
    always @(posedge clk) enc_start_q <= enc_start;
    ram_sdp #(.AW(BUF_AW)) u_encbuf (.clk(clk), .we(1'b0), .waddr({BUF_AW{1'b0}}), .wdata(8'd0),
        .raddr(enc_ra), .rdata(enc_rd));
    cobs_tx #(.AW(BUF_AW)) u_enc (.clk(clk), .rst(rst), .start(enc_start && !enc_start_q), .body_len(enc_len),
        .rd_addr(enc_ra), .rd_data(enc_rd), .out_data(enc_byte), .out_valid(enc_valid),
        .out_ready(enc_ready), .busy(enc_busy));
    uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_enctx (.clk(clk), .rst(rst), .data(enc_byte), .valid(enc_valid),
        .ready(enc_ready), .tx(enc_line));
endmodule
