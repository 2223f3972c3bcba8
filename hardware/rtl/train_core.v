// The training array: L fp32 lanes (lane_mac), their sequencer (train_seq), the
// position-estimation unit (pos_estimator) and the on-chip memories they share:
//
//   WMEM  L x fp32 words: weights in FP layout (row c: W[., c] over K lanes, the bias as row C),
//         their momentum (same layout), weights in BP layout (row k: W[k, .] over C lanes),
//         LOSS_GRADS' gradients
//   DMEM  L x fp32 words per (sample, lane tile): errors d of each layer, the logits
//   SMEM  2 bits per lane per (sample, lane tile): the states the estimator wrote
//   LMEM  per-sample lists {index, value}, PMEM their {end, start} per sample
//   GMEM  per-channel lists {sample, value}, one bank per lane, with their counts
//
// The control processor configures a phase through the register port, starts it and waits
// for `busy` to fall; between phases it reads and writes single fp32 lanes of WMEM and DMEM
// through the memory port (weights in, gradients and logits out, the loss gradient in) and
// pushes input tiles into the estimator.
module train_core #(
    parameter L   = 16,
    parameter LB  = 4,
    parameter WAW = 12,
    parameter DAW = 10,
    parameter LAW = 14,
    parameter PAW = 8,
    parameter GAW = 10,
    parameter CAW = 5
) (
    input  wire        clk,
    input  wire        rst,
    // registers
    input  wire        reg_we,
    input  wire [5:0]  reg_addr,
    input  wire [31:0] reg_wdata,
    output reg  [31:0] reg_rdata,
    // lanes of WMEM (sel 0), DMEM (sel 1), the estimator input word (sel 2); read data
    // mem_rdata is valid two cycles after mem_sel/mem_addr/mem_lane
    input  wire [1:0]  mem_sel,
    input  wire [15:0] mem_addr,
    input  wire [LB-1:0] mem_lane,
    input  wire        mem_we,
    input  wire [31:0] mem_wdata,
    output reg  [31:0] mem_rdata,
    output wire        busy
);
    // -- registers ----------------------------------------------------------------------------
    reg [7:0]  n, ct_n, kt_n;
    reg [15:0] c_in, k_out, flags;
    reg [8:0]  nmax;
    reg [1:0]  act;
    reg        z_en;
    reg [15:0] p_in, g_in, cnt_in, p_g, wf, wb, mf, gr, d_in, d_out, s_in, s_out;
    reg [15:0] p_out, l_out, g_out, cnt_out, se_out, z_out;
    reg [31:0] lr_neg, mom, wd;
    reg        start;
    reg [1:0]  mode;
    reg        push;
    reg [7:0]  push_p, push_kt;
    reg        push_last;
    reg [32*L-1:0] est_in;

    wire seq_busy, est_ready;
    assign busy = seq_busy || !est_ready || start || push;

    wire [31:0] cyc_fp, cyc_bp, cyc_wg, cyc_up, mac_fp, mac_bp, mac_wg, ent_fp, ent_bp, ent_wg;
    wire [31:0] est_tiles, est_entries;

    always @(posedge clk) begin
        start <= 1'b0;
        if (rst) begin
            n <= 0; ct_n <= 0; kt_n <= 0; c_in <= 0; k_out <= 0; flags <= 0; nmax <= 0; act <= 0; z_en <= 0;
            p_in <= 0; g_in <= 0; cnt_in <= 0; p_g <= 0; wf <= 0; wb <= 0; mf <= 0; gr <= 0; d_in <= 0;
            d_out <= 0; s_in <= 0; s_out <= 0; p_out <= 0; l_out <= 0; g_out <= 0; cnt_out <= 0; se_out <= 0;
            z_out <= 0; lr_neg <= 0; mom <= 0; wd <= 0; mode <= 0; push <= 0; push_p <= 0; push_kt <= 0;
            push_last <= 0; est_in <= 0;
        end else begin
            if (push && est_ready) push <= 1'b0;
            if (reg_we)
                case (reg_addr)
                6'h00: begin start <= reg_wdata[0]; mode <= reg_wdata[2:1]; end
                6'h01: n <= reg_wdata[7:0];
                6'h02: c_in <= reg_wdata[15:0];
                6'h03: k_out <= reg_wdata[15:0];
                6'h04: ct_n <= reg_wdata[7:0];
                6'h05: kt_n <= reg_wdata[7:0];
                6'h06: nmax <= reg_wdata[8:0];
                6'h07: flags <= reg_wdata[15:0];
                6'h08: begin act <= reg_wdata[1:0]; z_en <= reg_wdata[4]; end
                6'h09: p_in <= reg_wdata[15:0];
                6'h0A: g_in <= reg_wdata[15:0];
                6'h0B: cnt_in <= reg_wdata[15:0];
                6'h0C: p_g <= reg_wdata[15:0];
                6'h0D: wf <= reg_wdata[15:0];
                6'h0E: wb <= reg_wdata[15:0];
                6'h0F: mf <= reg_wdata[15:0];
                6'h10: gr <= reg_wdata[15:0];
                6'h11: d_in <= reg_wdata[15:0];
                6'h12: d_out <= reg_wdata[15:0];
                6'h13: s_in <= reg_wdata[15:0];
                6'h14: s_out <= reg_wdata[15:0];
                6'h15: p_out <= reg_wdata[15:0];
                6'h16: l_out <= reg_wdata[15:0];
                6'h17: g_out <= reg_wdata[15:0];
                6'h18: cnt_out <= reg_wdata[15:0];
                6'h19: se_out <= reg_wdata[15:0];
                6'h1A: z_out <= reg_wdata[15:0];
                6'h1C: lr_neg <= reg_wdata;
                6'h1D: mom <= reg_wdata;
                6'h1E: wd <= reg_wdata;
                6'h20: begin push <= 1'b1; push_p <= reg_wdata[7:0]; push_kt <= reg_wdata[15:8];
                             push_last <= reg_wdata[16]; end
                6'h21: est_in <= 0;          // the CPU then writes only the non-zero lanes of a tile
                default: ;
                endcase
            if (mem_we && mem_sel == 2'd2) est_in[32*mem_lane +: 32] <= mem_wdata;
        end
    end

    always @* begin
        case (reg_addr)
        6'h00: reg_rdata = {28'd0, start, push, !est_ready, seq_busy};
        6'h30: reg_rdata = cyc_fp;
        6'h31: reg_rdata = cyc_bp;
        6'h32: reg_rdata = cyc_wg;
        6'h33: reg_rdata = cyc_up;
        6'h34: reg_rdata = mac_fp;
        6'h35: reg_rdata = mac_bp;
        6'h36: reg_rdata = mac_wg;
        6'h37: reg_rdata = ent_fp;
        6'h38: reg_rdata = ent_bp;
        6'h39: reg_rdata = ent_wg;
        6'h3A: reg_rdata = est_tiles;
        6'h3B: reg_rdata = est_entries;
        6'h3F: reg_rdata = L;
        default: reg_rdata = 32'd0;
        endcase
    end

    // -- sequencer ------------------------------------------------------------------------------
    wire [15:0] pm_ra, lm_ra, gm_ra, cnt_ra, sm_ra, s_wm_ra, s_dm_ra, s_wm_wa, s_dm_wa;
    wire [31:0] pm_rd;
    wire [47:0] lm_rd;
    wire [40*L-1:0] gm_rd;
    wire [8*L-1:0]  cnt_rd;
    wire [2*L-1:0]  sm_rd;
    wire [32*L-1:0] wm_rd, dm_rd, s_wm_wd, s_dm_wd, acc, est_word;
    wire [L-1:0]    s_wm_we, s_dm_we, op_en, est_bounds;
    wire            op_valid, op_load, op_clear, op_vsel, est_valid, est_last;
    wire [31:0]     op_a;
    wire [7:0]      est_p, est_kt;
    train_seq #(.L(L), .LB(LB)) u_seq (
        .clk(clk), .rst(rst), .start(start), .mode(mode), .busy(seq_busy),
        .n(n), .c_in(c_in), .k_out(k_out), .ct_n(ct_n), .kt_n(kt_n), .nmax(nmax), .flags(flags),
        .p_in(p_in), .g_in(g_in), .cnt_in(cnt_in), .p_g(p_g), .wf(wf), .wb(wb), .mf(mf), .gr(gr),
        .d_in(d_in), .d_out(d_out), .s_in(s_in), .s_out(s_out), .lr_neg(lr_neg), .mom(mom), .wd(wd),
        .pm_ra(pm_ra), .pm_rd(pm_rd), .lm_ra(lm_ra), .lm_rd(lm_rd), .gm_ra(gm_ra), .gm_rd(gm_rd),
        .cnt_ra(cnt_ra), .cnt_rd(cnt_rd), .sm_ra(sm_ra), .sm_rd(sm_rd), .wm_ra(s_wm_ra), .wm_rd(wm_rd),
        .dm_ra(s_dm_ra), .dm_rd(dm_rd), .wm_we(s_wm_we), .wm_wa(s_wm_wa), .wm_wd(s_wm_wd),
        .dm_we(s_dm_we), .dm_wa(s_dm_wa), .dm_wd(s_dm_wd),
        .op_valid(op_valid), .op_en(op_en), .op_load(op_load), .op_clear(op_clear), .op_a(op_a),
        .op_vsel(op_vsel), .acc(acc), .est_valid(est_valid), .est_ready(est_ready), .est_word(est_word),
        .est_bounds(est_bounds), .est_p(est_p), .est_kt(est_kt), .est_last(est_last),
        .cyc_fp(cyc_fp), .cyc_bp(cyc_bp), .cyc_wg(cyc_wg), .cyc_up(cyc_up), .mac_fp(mac_fp),
        .mac_bp(mac_bp), .mac_wg(mac_wg), .ent_fp(ent_fp), .ent_bp(ent_bp), .ent_wg(ent_wg));

    // -- lanes ----------------------------------------------------------------------------------
    genvar j;
    generate for (j = 0; j < L; j = j + 1) begin : lane
        lane_mac u_mac (.clk(clk), .rst(rst), .valid(op_valid), .en(op_en[j]), .load(op_load),
            .clear(op_clear), .a(op_a), .v(op_vsel ? dm_rd[32*j +: 32] : wm_rd[32*j +: 32]),
            .acc(acc[32*j +: 32]));
    end endgenerate

    // -- estimator: FP tiles from the sequencer, input tiles from the CPU ------------------------
    reg [L-1:0] push_bounds;
    integer i;
    always @* begin
        for (i = 0; i < L; i = i + 1)
            push_bounds[i] = ({16'd0, push_kt} * L + i) < {16'd0, k_out};
    end
    wire            e_valid = est_valid || (push && !seq_busy);
    wire            e_s_we, e_z_we, e_l_we, e_p_we;
    wire [15:0]     e_s_wa, e_z_wa, e_l_wa, e_p_wa;
    wire [2*L-1:0]  e_s_wd;
    wire [32*L-1:0] e_z_wd;
    wire [47:0]     e_l_wd;
    wire [31:0]     e_p_wd;
    wire [L-1:0]    e_g_we;
    wire [GAW*L-1:0] e_g_wa;
    wire [40*L-1:0] e_g_wd;
    pos_estimator #(.L(L), .LB(LB), .GAW(GAW), .CAW(CAW)) u_est (
        .clk(clk), .rst(rst), .in_valid(e_valid), .ready(est_ready),
        .in_word(est_valid ? est_word : est_in), .in_bounds(est_valid ? est_bounds : push_bounds),
        .in_p(est_valid ? est_p : push_p), .in_kt(est_valid ? est_kt : push_kt),
        .in_last(est_valid ? est_last : push_last), .act(act), .kt_n(kt_n), .nmax(nmax),
        .p_base(p_out), .l_base(l_out), .g_base(g_out), .c_base(cnt_out), .s_base(se_out), .z_base(z_out),
        .z_en(z_en), .s_we(e_s_we), .s_wa(e_s_wa), .s_wd(e_s_wd), .z_we(e_z_we), .z_wa(e_z_wa), .z_wd(e_z_wd),
        .l_we(e_l_we), .l_wa(e_l_wa), .l_wd(e_l_wd), .p_we(e_p_we), .p_wa(e_p_wa), .p_wd(e_p_wd),
        .g_we(e_g_we), .g_wa(e_g_wa), .g_wd(e_g_wd), .cnt_ra(cnt_ra[CAW-1:0]), .cnt_rd(cnt_rd),
        .cnt_tiles(est_tiles), .cnt_entries(est_entries));

    // -- memories -------------------------------------------------------------------------------
    ram_sdp #(.AW(PAW), .DW(32)) u_pm (.clk(clk), .we(e_p_we), .waddr(e_p_wa[PAW-1:0]), .wdata(e_p_wd),
        .raddr(pm_ra[PAW-1:0]), .rdata(pm_rd));
    ram_sdp #(.AW(LAW), .DW(48)) u_lm (.clk(clk), .we(e_l_we), .waddr(e_l_wa[LAW-1:0]), .wdata(e_l_wd),
        .raddr(lm_ra[LAW-1:0]), .rdata(lm_rd));
    ram_sdp #(.AW(DAW), .DW(2 * L)) u_sm (.clk(clk), .we(e_s_we), .waddr(e_s_wa[DAW-1:0]), .wdata(e_s_wd),
        .raddr(sm_ra[DAW-1:0]), .rdata(sm_rd));
    generate for (j = 0; j < L; j = j + 1) begin : gbank
        ram_sdp #(.AW(GAW), .DW(40)) u_gm (.clk(clk), .we(e_g_we[j]), .waddr(e_g_wa[GAW*j +: GAW]),
            .wdata(e_g_wd[40*j +: 40]), .raddr(gm_ra[GAW-1:0]), .rdata(gm_rd[40*j +: 40]));
    end endgenerate

    // WMEM and DMEM: the sequencer's while it runs, the CPU's lanes otherwise (the estimator's
    // dense writes to DMEM take precedence; the CPU does not write DMEM while it pushes)
    wire            cpu_w = mem_we && mem_sel == 2'd0 && !seq_busy;
    wire            cpu_d = mem_we && mem_sel == 2'd1 && !seq_busy && !e_z_we;
    wire [L-1:0]    cpu_lane = {{(L-1){1'b0}}, 1'b1} << mem_lane;
    ram_lanes #(.L(L), .AW(WAW)) u_wm (.clk(clk),
        .we(seq_busy ? s_wm_we : (cpu_w ? cpu_lane : {L{1'b0}})),
        .waddr(seq_busy ? s_wm_wa[WAW-1:0] : mem_addr[WAW-1:0]),
        .wdata(seq_busy ? s_wm_wd : {L{mem_wdata}}),
        .raddr(seq_busy ? s_wm_ra[WAW-1:0] : mem_addr[WAW-1:0]), .rdata(wm_rd));
    ram_lanes #(.L(L), .AW(DAW)) u_dm (.clk(clk),
        .we(e_z_we ? {L{1'b1}} : seq_busy ? s_dm_we : (cpu_d ? cpu_lane : {L{1'b0}})),
        .waddr(e_z_we ? e_z_wa[DAW-1:0] : seq_busy ? s_dm_wa[DAW-1:0] : mem_addr[DAW-1:0]),
        .wdata(e_z_we ? e_z_wd : seq_busy ? s_dm_wd : {L{mem_wdata}}),
        .raddr(seq_busy ? s_dm_ra[DAW-1:0] : mem_addr[DAW-1:0]), .rdata(dm_rd));

    // CPU read: the word arrives one cycle after the address, the lane is registered after it
    reg [LB-1:0] lane_q;
    reg          sel_q;
    always @(posedge clk) begin
        lane_q    <= mem_lane;
        sel_q     <= mem_sel[0];
        mem_rdata <= sel_q ? dm_rd[32*lane_q +: 32] : wm_rd[32*lane_q +: 32];
    end
endmodule
