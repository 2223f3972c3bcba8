// The whole accelerator: what goes on the board (docs/HARDWARE.md has the block diagram).
//
//   UART -> device_link (framing, CRC, response cache, session/step checks, staging, GET_CHUNK)
//        -> control processor (PicoRV32, RV32IM, firmware in block RAM: hardware/firmware/)
//        -> train_core (sequencer, position-estimation unit, fp32 lanes, their memories)
//           scalar FPU (fp32_mul/fp32_add/fp32_div: the loss)
//
// The processor sees everything through one bus (hardware/firmware/mmio.h has the map):
//   0x0....... RAM            0x1....... link registers   0x2.......  link buffers (bytes)
//   0x3....... scalar FPU     0x4....... array registers  0x5.......  array lanes
//   0x6....... cycle counter, boot count, soft reset, the build's parameters, boot config text
module device_top #(
    parameter CLKS_PER_BIT = 217,
    parameter IDLE_CLKS    = 12500000,
    parameter MAX_PAYLOAD  = 4096,
    parameter BUF_AW       = 13,
    parameter STAGE_AW     = 18,
    parameter RES_AW       = 18,
    parameter RAM_AW       = 14,          // processor RAM: 2**RAM_AW words
    parameter CLOCK_HZ     = 25000000,
    parameter L            = 16,
    parameter LB           = 4,
    parameter WAW          = 12,
    parameter DAW          = 10,
    parameter LAW          = 14,
    parameter PAW          = 8,
    parameter GAW          = 10,
    parameter CAW          = 5,
    parameter NMAX         = 32,
    parameter FW_HEX       = "firmware.hex",
    parameter CFG_HEX      = "bootcfg.hex",
    parameter BYTE_PORT    = 0            // 1: the link's bytes bypass the UART (simulation's wide link)
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        uart_rx,
    output wire        uart_tx,
    input  wire [31:0] entropy,
    input  wire [7:0]  host_byte,         // BYTE_PORT = 1 only
    input  wire        host_valid,
    output wire [7:0]  dev_byte,
    output wire        dev_valid,
    input  wire        dev_ready,
    output wire        trap
);
    // -- reset: the pin, or the firmware's soft reset (the emulator's --reset-after) --------------
    reg  [4:0]  srst;
    reg  [31:0] boots;
    wire        rst_all = rst || (srst != 5'd0);
    reg         soft_req;
    always @(posedge clk) begin
        if (rst) begin
            srst  <= 5'd0;
            boots <= 32'd1;
        end else if (soft_req) begin
            srst  <= 5'd31;
            boots <= boots + 1;
        end else if (srst != 5'd0)
            srst <= srst - 1'b1;
    end

    // -- processor ----------------------------------------------------------------------------------
    wire        mem_valid, mem_instr;
    wire [31:0] mem_addr, mem_wdata;
    wire [3:0]  mem_wstrb;
    reg         mem_ready;
    wire [31:0] mem_rdata;
    /* verilator lint_off PINCONNECTEMPTY */   // the look-ahead, co-processor and trace ports are unused
    picorv32 #(.ENABLE_COUNTERS(0), .ENABLE_COUNTERS64(0), .BARREL_SHIFTER(1), .COMPRESSED_ISA(0),
               .ENABLE_MUL(0), .ENABLE_FAST_MUL(1), .ENABLE_DIV(1), .CATCH_MISALIGN(1), .CATCH_ILLINSN(1),
               .PROGADDR_RESET(32'h0), .STACKADDR(32'h4 << RAM_AW)) u_cpu (
        .clk(clk), .resetn(!rst_all), .trap(trap), .mem_valid(mem_valid), .mem_instr(mem_instr),
        .mem_ready(mem_ready), .mem_addr(mem_addr), .mem_wdata(mem_wdata), .mem_wstrb(mem_wstrb),
        .mem_rdata(mem_rdata), .mem_la_read(), .mem_la_write(), .mem_la_addr(), .mem_la_wdata(),
        .mem_la_wstrb(), .pcpi_valid(), .pcpi_insn(), .pcpi_rs1(), .pcpi_rs2(), .pcpi_wr(1'b0),
        .pcpi_rd(32'd0), .pcpi_wait(1'b0), .pcpi_ready(1'b0), .irq(32'd0), .eoi(), .trace_valid(),
        .trace_data());
    /* verilator lint_on PINCONNECTEMPTY */

    wire [3:0]  region = mem_addr[31:28];
    wire        req    = mem_valid && !mem_ready;

    // -- RAM (firmware image at power-on) ---------------------------------------------------------
    reg  [31:0] ram [0:(1 << RAM_AW) - 1];
    initial $readmemh(FW_HEX, ram);
    wire [RAM_AW-1:0] ram_a  = mem_addr[RAM_AW+1:2];
    wire [3:0]        ram_we = (req && region == 4'h0) ? mem_wstrb : 4'b0000;
    reg  [31:0]       ram_q;
    always @(posedge clk) begin
        if (ram_we[0]) ram[ram_a][7:0]   <= mem_wdata[7:0];
        if (ram_we[1]) ram[ram_a][15:8]  <= mem_wdata[15:8];
        if (ram_we[2]) ram[ram_a][23:16] <= mem_wdata[23:16];
        if (ram_we[3]) ram[ram_a][31:24] <= mem_wdata[31:24];
        ram_q <= ram[ram_a];
    end
    // boot configuration text (a board's config ROM; the simulation writes it before reset)
    reg  [31:0] bootcfg [0:255];
    initial $readmemh(CFG_HEX, bootcfg);
    reg  [31:0] cfg_q;
    always @(posedge clk) cfg_q <= bootcfg[mem_addr[9:2]];

    // -- link -----------------------------------------------------------------------------------------
    wire        core_req;
    wire [7:0]  core_type;
    wire [15:0] core_len, max_payload;
    wire [31:0] session_id, step;
    reg         core_done, core_step_we, core_ready_we, core_result_we, core_we;
    reg  [7:0]  core_rsp_type, core_wdata;
    reg  [15:0] core_rsp_len;
    reg  [31:0] core_step, core_result_len, core_addr;
    reg         core_ready;
    reg  [1:0]  core_sel;
    wire [7:0]  core_rdata;
    wire [31:0] lc0, lc1, lc2, lc3, lc4, lc5, lc6, lc7, lc8, lc9;
    device_link #(.CLKS_PER_BIT(CLKS_PER_BIT), .IDLE_CLKS(IDLE_CLKS), .MAX_PAYLOAD(MAX_PAYLOAD),
                  .BUF_AW(BUF_AW), .STAGE_AW(STAGE_AW), .RES_AW(RES_AW), .BYTE_PORT(BYTE_PORT)) u_link (
        .clk(clk), .rst(rst_all), .uart_rx_pin(uart_rx), .uart_tx_pin(uart_tx), .host_byte(host_byte),
        .host_valid(host_valid), .dev_byte(dev_byte), .dev_valid(dev_valid), .dev_ready(dev_ready),
        .entropy(entropy ^ (boots * 32'h9E3779B9)),
        .core_req(core_req), .core_type(core_type), .core_len(core_len), .session_id(session_id), .step(step),
        .max_payload(max_payload), .core_done(core_done), .core_rsp_type(core_rsp_type),
        .core_rsp_len(core_rsp_len), .core_step_we(core_step_we), .core_step(core_step),
        .core_ready_we(core_ready_we), .core_ready(core_ready), .core_result_we(core_result_we),
        .core_result_len(core_result_len), .core_sel(core_sel), .core_addr(core_addr), .core_wdata(core_wdata),
        .core_we(core_we), .core_rdata(core_rdata),
        .cnt_rx_frames(lc0), .cnt_tx_frames(lc1), .cnt_duplicates(lc2), .cnt_errors_sent(lc3), .cnt_bad_cobs(lc4),
        .cnt_bad_crc(lc5), .cnt_overruns(lc6), .cnt_idle_resets(lc7), .cnt_busy_drops(lc8), .cnt_uart_errors(lc9));

    // -- scalar FPU -----------------------------------------------------------------------------------
    reg  [31:0] fa, fb;
    wire [31:0] fmul_y, fadd_y, fdiv_y;
    wire        fdiv_busy;
    reg         fdiv_start;
    fp32_mul u_fmul (.a(fa), .b(fb), .y(fmul_y));
    fp32_add u_fadd (.a(fa), .b(fb), .y(fadd_y));
    fp32_div u_fdiv (.clk(clk), .rst(rst_all), .start(fdiv_start), .a(fa), .b(fb), .busy(fdiv_busy), .y(fdiv_y));

    // -- training array -------------------------------------------------------------------------------
    reg         creg_we, cmem_we;
    reg  [5:0]  creg_addr;
    reg  [31:0] creg_wdata, cmem_wdata;
    reg  [1:0]  cmem_sel;
    reg  [15:0] cmem_addr;
    reg  [LB-1:0] cmem_lane;
    wire [31:0] creg_rdata, cmem_rdata;
    wire        core_busy;
    train_core #(.L(L), .LB(LB), .WAW(WAW), .DAW(DAW), .LAW(LAW), .PAW(PAW), .GAW(GAW), .CAW(CAW)) u_core (
        .clk(clk), .rst(rst_all), .reg_we(creg_we), .reg_addr(creg_addr), .reg_wdata(creg_wdata),
        .reg_rdata(creg_rdata), .mem_sel(cmem_sel), .mem_addr(cmem_addr), .mem_lane(cmem_lane), .mem_we(cmem_we),
        .mem_wdata(cmem_wdata), .mem_rdata(cmem_rdata), .busy(core_busy));

    // CRC-32 of the bytes the processor writes into the link's buffers since it last cleared it
    // (the RESULT blob's CRC without a software loop)
    reg  [31:0] out_crc;
    wire [31:0] out_crc_next;
    crc32_byte u_ocrc (.crc_in(out_crc), .data(core_wdata), .crc_out(out_crc_next));

    // -- bus ------------------------------------------------------------------------------------------
    reg  [63:0] cycles;
    reg  [3:0]  wcnt;
    reg  [2:0]  bidx;          // link buffer: byte of the word
    reg         busy_acc;
    reg  [31:0] rdata;
    reg         from_ram, from_cfg;
    assign mem_rdata = from_ram ? ram_q : from_cfg ? cfg_q : rdata;

    function [31:0] link_reg;
        input [5:0] a;
        case (a)
        6'h00: link_reg = {31'd0, core_req};
        6'h01: link_reg = {24'd0, core_type};
        6'h02: link_reg = {16'd0, core_len};
        6'h03: link_reg = session_id;
        6'h04: link_reg = step;
        6'h05: link_reg = {16'd0, max_payload};
        6'h0C: link_reg = out_crc;
        6'h10: link_reg = lc0;
        6'h11: link_reg = lc1;
        6'h12: link_reg = lc2;
        6'h13: link_reg = lc3;
        6'h14: link_reg = lc4;
        6'h15: link_reg = lc5;
        6'h16: link_reg = lc6;
        6'h17: link_reg = lc7;
        6'h18: link_reg = lc8;
        6'h19: link_reg = lc9;
        default: link_reg = 32'd0;
        endcase
    endfunction

    function [31:0] misc_reg;
        input [5:0] a;
        case (a)
        6'h00: misc_reg = cycles[31:0];
        6'h01: misc_reg = cycles[63:32];
        6'h02: misc_reg = boots;
        6'h04: misc_reg = L;
        6'h05: misc_reg = CLOCK_HZ;
        6'h06: misc_reg = NMAX;
        6'h07: misc_reg = STAGE_AW;
        6'h08: misc_reg = WAW;
        6'h09: misc_reg = DAW;
        6'h0A: misc_reg = LAW;
        6'h0B: misc_reg = PAW;
        6'h0C: misc_reg = GAW;
        6'h0D: misc_reg = CAW;
        6'h0E: misc_reg = RES_AW;
        6'h0F: misc_reg = IDLE_CLKS;
        default: misc_reg = 32'd0;
        endcase
    endfunction

    always @(posedge clk) begin
        mem_ready      <= 1'b0;
        core_we        <= 1'b0;
        core_done      <= 1'b0;
        fdiv_start     <= 1'b0;
        creg_we        <= 1'b0;
        cmem_we        <= 1'b0;
        soft_req       <= 1'b0;
        from_ram       <= 1'b0;
        from_cfg       <= 1'b0;
        cycles         <= cycles + 1;
        if (core_we) out_crc <= out_crc_next;
        if (rst_all) begin
            out_crc <= 32'hFFFFFFFF;
            wcnt <= 0; bidx <= 0; busy_acc <= 0; rdata <= 0; cycles <= 0; fa <= 0; fb <= 0;
            core_rsp_type <= 0; core_rsp_len <= 0; core_step <= 0; core_step_we <= 0; core_ready <= 0;
            core_ready_we <= 0; core_result_len <= 0; core_result_we <= 0; core_addr <= 0; core_sel <= 0;
            core_wdata <= 0; creg_addr <= 0; creg_wdata <= 0; cmem_sel <= 0; cmem_addr <= 0; cmem_lane <= 0;
            cmem_wdata <= 0;
        end else begin
            if (core_done) begin               // the link took the answer: clear the one-shot fields
                core_step_we <= 1'b0; core_ready_we <= 1'b0; core_result_we <= 1'b0;
            end
            if (req) case (region)
            4'h0: begin
                mem_ready <= 1'b1;
                from_ram  <= 1'b1;
            end
            4'h1: begin
                mem_ready <= 1'b1;
                rdata     <= link_reg(mem_addr[7:2]);
                if (mem_wstrb != 4'b0000)
                    case (mem_addr[7:2])
                    6'h06: core_rsp_type <= mem_wdata[7:0];
                    6'h07: core_rsp_len <= mem_wdata[15:0];
                    6'h08: begin core_step <= mem_wdata; core_step_we <= 1'b1; end
                    6'h09: begin core_ready <= mem_wdata[0]; core_ready_we <= 1'b1; end
                    6'h0A: begin core_result_len <= mem_wdata; core_result_we <= 1'b1; end
                    6'h0B: core_done <= 1'b1;
                    6'h0C: out_crc <= 32'hFFFFFFFF;
                    default: ;
                    endcase
            end
            4'h2: begin                         // four bytes of a link buffer, one after the other
                if (!busy_acc) begin
                    busy_acc <= 1'b1;
                    bidx     <= 0;
                    wcnt     <= 0;
                end else if (bidx == 3'd4) begin
                    busy_acc  <= 1'b0;
                    mem_ready <= 1'b1;
                end else if (mem_wstrb != 4'b0000) begin
                    core_sel   <= mem_addr[25:24];
                    core_addr  <= {8'd0, mem_addr[23:2], bidx[1:0]};
                    core_wdata <= mem_wdata[8*bidx[1:0] +: 8];
                    core_we    <= mem_wstrb[bidx[1:0]];
                    bidx       <= bidx + 1'b1;
                end else begin
                    core_sel  <= mem_addr[25:24];
                    core_addr <= {8'd0, mem_addr[23:2], bidx[1:0]};
                    wcnt      <= wcnt + 1'b1;
                    if (wcnt == 4'd2) begin          // address registered, then the RAM's cycle
                        rdata[8*bidx[1:0] +: 8] <= core_rdata;
                        bidx <= bidx + 1'b1;
                        wcnt <= 0;
                    end
                end
            end
            4'h3: begin
                if (mem_wstrb != 4'b0000) begin
                    if (mem_addr[3:2] == 2'd0) fa <= mem_wdata;
                    if (mem_addr[3:2] == 2'd1) fb <= mem_wdata;
                    mem_ready <= 1'b1;
                end else if (mem_addr[4:2] == 3'd4) begin      // divide: start, wait for the quotient
                    if (!busy_acc) begin
                        busy_acc   <= 1'b1;
                        fdiv_start <= 1'b1;
                        wcnt       <= 0;
                    end else if (wcnt < 4'd2) wcnt <= wcnt + 1'b1;
                    else if (!fdiv_busy) begin
                        busy_acc  <= 1'b0;
                        rdata     <= fdiv_y;
                        mem_ready <= 1'b1;
                    end
                end else begin
                    rdata     <= mem_addr[2] ? fadd_y : fmul_y;
                    mem_ready <= 1'b1;
                end
            end
            4'h4: begin
                creg_addr  <= mem_addr[7:2];
                creg_wdata <= mem_wdata;
                if (mem_wstrb != 4'b0000) begin
                    creg_we   <= 1'b1;
                    mem_ready <= 1'b1;
                end else if (!busy_acc) busy_acc <= 1'b1;
                else begin
                    busy_acc  <= 1'b0;
                    rdata     <= creg_rdata;
                    mem_ready <= 1'b1;
                end
            end
            4'h5: begin
                cmem_sel   <= mem_addr[25:24];
                cmem_addr  <= mem_addr[23:8];
                cmem_lane  <= mem_addr[LB+1:2];
                cmem_wdata <= mem_wdata;
                if (mem_wstrb != 4'b0000) begin
                    cmem_we   <= 1'b1;
                    mem_ready <= 1'b1;
                end else if (!busy_acc) begin
                    busy_acc <= 1'b1;
                    wcnt     <= 0;
                end else if (wcnt == 4'd2) begin      // the lane is registered two cycles after its address
                    busy_acc  <= 1'b0;
                    rdata     <= cmem_rdata;
                    mem_ready <= 1'b1;
                end else wcnt <= wcnt + 1'b1;
            end
            4'h6: begin
                mem_ready <= 1'b1;
                if (mem_addr[12]) from_cfg <= 1'b1;
                else rdata <= misc_reg(mem_addr[7:2]);
                if (mem_wstrb != 4'b0000 && mem_addr[12:2] == 11'h003) soft_req <= 1'b1;
            end
            default: begin
                mem_ready <= 1'b1;
                rdata     <= 32'd0;
            end
            endcase
        end
    end
endmodule
