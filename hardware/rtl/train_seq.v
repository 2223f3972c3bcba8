// The training array's sequencer: one Gemm layer's FP, BP or WG (with the SGD update fused
// into WG) on L lanes, from the lists and states the position-estimation unit wrote during
// FP (docs/HARDWARE.md has the dataflow and the memory layout). Every phase issues one
// operation per cycle into a 5-stage pipeline shared by all of them:
//
//   v0 list address issued -> v1 entry read: operand addresses computed -> v2 operand
//   addresses issued -> v3 operands read: the lanes get scalar, vector, enables ->
//   v4 product registered (in lane_mac) -> accumulator
//
//   FP  tile (p, t):  acc := bias row C of WF (a load), then for each entry (c, a) of the
//                     sample's list: a * WF[c, t]; lanes: the K bounds. Result -> estimator.
//   BP  tile (p, t):  skipped (zero word) when no lane of the input tile is in G; else for
//                     each entry k of the sample's G list (this layer's output list):
//                     d[p, k] (a lane of the error word) * WB[k, t]; lanes: G of the input.
//   WG  tile (c, t):  for each entry (p, a) of channel c's list (bank c mod L; the bias row
//                     C: every sample with a = 1): a * d[p, t]; lanes: G of the output.
//                     Then either dW -> GR (LOSS_GRADS), or the update on the lanes:
//                     acc += wd * W; acc += m * MF; MF := acc; acc := W; acc += (-lr) * MF;
//                     W := acc; and the new W row written lane by lane into WB (transposed).
module train_seq #(
    parameter L  = 16,
    parameter LB = 4
) (
    input  wire            clk,
    input  wire            rst,
    input  wire            start,
    input  wire [1:0]      mode,        // 0 FP, 1 BP, 2 WG
    output wire            busy,
    // layer configuration
    input  wire [7:0]      n,
    input  wire [15:0]     c_in,
    input  wire [15:0]     k_out,
    input  wire [7:0]      ct_n,
    input  wire [7:0]      kt_n,
    input  wire [8:0]      nmax,
    input  wire [15:0]     flags,       // see F_* below
    input  wire [15:0]     p_in, g_in, cnt_in, p_g, wf, wb, mf, gr, d_in, d_out, s_in, s_out,
    input  wire [31:0]     lr_neg, mom, wd,
    // memory read ports (registered addresses; data one cycle later)
    output reg  [15:0]     pm_ra,
    input  wire [31:0]     pm_rd,
    output reg  [15:0]     lm_ra,
    input  wire [47:0]     lm_rd,
    output reg  [15:0]     gm_ra,
    input  wire [40*L-1:0] gm_rd,
    output wire [15:0]     cnt_ra,      // asynchronous
    input  wire [8*L-1:0]  cnt_rd,
    output reg  [15:0]     sm_ra,
    input  wire [2*L-1:0]  sm_rd,
    output reg  [15:0]     wm_ra,
    input  wire [32*L-1:0] wm_rd,
    output reg  [15:0]     dm_ra,
    input  wire [32*L-1:0] dm_rd,
    // memory writes
    output reg  [L-1:0]    wm_we,
    output reg  [15:0]     wm_wa,
    output reg  [32*L-1:0] wm_wd,
    output reg  [L-1:0]    dm_we,
    output reg  [15:0]     dm_wa,
    output reg  [32*L-1:0] dm_wd,
    // lanes
    output wire            op_valid,
    output wire [L-1:0]    op_en,
    output wire            op_load,
    output wire            op_clear,
    output wire [31:0]     op_a,
    output wire            op_vsel,     // vector from 0: WMEM, 1: DMEM
    input  wire [32*L-1:0] acc,
    // estimator hand-off (FP)
    output reg             est_valid,
    input  wire            est_ready,
    output reg  [32*L-1:0] est_word,
    output reg  [L-1:0]    est_bounds,
    output reg  [7:0]      est_p,
    output reg  [7:0]      est_kt,
    output reg             est_last,
    // counters: cycles per class (0 FP, 1 BP, 2 WG, 3 update), MACs of weights (the bias row's
    // additions are not counted, as the engines count none), list entries
    output reg  [31:0]     cyc_fp, cyc_bp, cyc_wg, cyc_up,
    output reg  [31:0]     mac_fp, mac_bp, mac_wg,
    output reg  [31:0]     ent_fp, ent_bp, ent_wg
);
    localparam M_FP = 2'd0, M_BP = 2'd1, M_WG = 2'd2;
    // flags
    localparam F_BIAS = 0, F_TRAIN_W = 1, F_TRAIN_B = 2, F_WB = 3, F_GRAD = 4, F_WD = 5, F_MOM = 6,
               F_WBUF = 7, F_BBUF = 8;
    localparam ONE = 32'h3F800000;
    // operation kinds
    localparam K_MAC = 2'd0, K_LOAD = 2'd1, K_UPD = 2'd2;

    localparam S_IDLE = 5'd0, S_TILE = 5'd1, S_PTR_W = 5'd2, S_PTR_G = 5'd3, S_STREAM = 5'd4, S_DRAIN = 5'd5,
               S_WRITE = 5'd6, S_U_WD = 5'd7, S_U_MOM = 5'd8, S_U_DR1 = 5'd9, S_U_WMF = 5'd10, S_U_LD = 5'd11,
               S_U_LR = 5'd12, S_U_DR2 = 5'd13, S_U_WWF = 5'd14, S_TRANS = 5'd15, S_NEXT = 5'd16;
    reg [4:0]  state;
    reg [1:0]  md;
    assign busy = (state != S_IDLE);

    // -- loops ------------------------------------------------------------------------------------
    reg  [7:0]  p;            // FP/BP: sample
    reg  [15:0] c;            // WG: input row (C = the bias row)
    reg  [7:0]  t;            // lane tile
    reg  [15:0] e, e_end;     // list entries of the tile
    reg  [L-1:0] tgate;       // BP: lanes of the input tile in G
    reg  [LB:0] ti;           // transposed write lane
    reg  [15:0] g_tile;       // WG: the channel list's first address
    wire [7:0]  nt     = (md == M_BP) ? ct_n : kt_n;
    wire [15:0] r_last = (flags[F_TRAIN_B] && flags[F_BIAS]) ? c_in : c_in - 16'd1;
    wire [LB-1:0] bank = c[LB-1:0];
    wire        bias_row = (c == c_in);
    wire        has_buf  = bias_row ? flags[F_BBUF] : flags[F_WBUF];

    // lanes of tile t below the count (K for FP/WG, C for BP)
    reg [L-1:0] bounds;
    integer i;
    always @* begin
        for (i = 0; i < L; i = i + 1)
            bounds[i] = ({16'd0, t} * L + i) < ((md == M_BP) ? {16'd0, c_in} : {16'd0, k_out});
    end
    assign cnt_ra = cnt_in + (c >> LB);
    wire [7:0] cnt_sel = cnt_rd[8*bank +: 8];

    // -- pipeline ----------------------------------------------------------------------------------
    // v0: issued this cycle (list address registered); fields travel with it
    reg         v0, v1, v2, v3, v4;
    reg  [1:0]  k0, k1, k2, k3;
    reg         dir0, dir1;           // direct operation (no list entry)
    reg  [15:0] daddr0, daddr1;       // its WMEM address
    reg  [15:0] didx0;                // its index (WG bias row: the sample)
    reg  [31:0] dval0, dval1;
    reg  [15:0] didx1;
    reg  [31:0] a2, a3;
    reg  [LB-1:0] lane2, lane3;
    reg         vsel2, vsel3;
    reg  [L-1:0] en2, en3_fix;
    reg         wg2, wg3, bp2, bp3;
    wire [39:0] gsel = gm_rd[40*bank +: 40];
    wire [15:0] idx1 = dir1 ? didx1 : (md == M_WG) ? {8'd0, gsel[39:32]} : lm_rd[47:32];
    wire [31:0] val1 = dir1 ? dval1 : (md == M_WG) ? gsel[31:0] : lm_rd[31:0];

    reg [L-1:0] lin3;
    always @* begin
        for (i = 0; i < L; i = i + 1)
            lin3[i] = (sm_rd[2*i +: 2] == 2'b01);
    end
    assign op_valid = v3;
    assign op_load  = (k3 == K_LOAD);
    assign op_a     = bp3 ? dm_rd[32*lane3 +: 32] : a3;
    assign op_vsel  = vsel3;
    assign op_en    = wg3 ? (lin3 & en3_fix) : en3_fix;
    reg clear_r;
    assign op_clear = clear_r;

    reg [LB+1:0] pop;
    always @* begin
        pop = 0;
        for (i = 0; i < L; i = i + 1)
            pop = pop + {{(LB+1){1'b0}}, op_en[i]};
    end
    wire drained = !v0 && !v1 && !v2 && !v3 && !v4;

    // issue helper
    task issue_list(input [15:0] addr);
        begin
            v0 <= 1'b1; k0 <= K_MAC; dir0 <= 1'b0;
            if (md == M_WG) gm_ra <= addr; else lm_ra <= addr;
        end
    endtask
    task issue_direct(input [1:0] kind, input [15:0] waddr, input [15:0] idx, input [31:0] val);
        begin
            v0 <= 1'b1; k0 <= kind; dir0 <= 1'b1; daddr0 <= waddr; didx0 <= idx; dval0 <= val;
        end
    endtask

    wire [15:0] row_w  = wf + c * kt_n + {8'd0, t};      // WG/update: WF word of the tile
    wire [15:0] row_m  = mf + c * kt_n + {8'd0, t};

    always @(posedge clk) begin
        wm_we     <= {L{1'b0}};
        dm_we     <= {L{1'b0}};
        est_valid <= 1'b0;
        clear_r   <= 1'b0;
        if (rst) begin
            state <= S_IDLE; md <= 0; p <= 0; c <= 0; t <= 0; e <= 0; e_end <= 0; tgate <= 0; ti <= 0;
            g_tile <= 0; v0 <= 0; v1 <= 0; v2 <= 0; v3 <= 0; v4 <= 0; k0 <= 0; k1 <= 0; k2 <= 0; k3 <= 0;
            dir0 <= 0; dir1 <= 0; daddr0 <= 0; daddr1 <= 0; didx0 <= 0; didx1 <= 0; dval0 <= 0; dval1 <= 0;
            a2 <= 0; a3 <= 0; lane2 <= 0; lane3 <= 0; vsel2 <= 0; vsel3 <= 0; en2 <= 0; en3_fix <= 0;
            wg2 <= 0; wg3 <= 0; bp2 <= 0; bp3 <= 0;
            pm_ra <= 0; lm_ra <= 0; gm_ra <= 0; sm_ra <= 0; wm_ra <= 0; dm_ra <= 0;
            wm_wa <= 0; wm_wd <= 0; dm_wa <= 0; dm_wd <= 0;
            est_word <= 0; est_bounds <= 0; est_p <= 0; est_kt <= 0; est_last <= 0;
            cyc_fp <= 0; cyc_bp <= 0; cyc_wg <= 0; cyc_up <= 0; mac_fp <= 0; mac_bp <= 0; mac_wg <= 0;
            ent_fp <= 0; ent_bp <= 0; ent_wg <= 0;
        end else begin
            // ---- counters ----
            if (busy) begin
                if (md == M_FP) cyc_fp <= cyc_fp + 1;
                else if (md == M_BP) cyc_bp <= cyc_bp + 1;
                else if (state >= S_U_WD && state <= S_TRANS) cyc_up <= cyc_up + 1;
                else cyc_wg <= cyc_wg + 1;
            end
            if (v3 && k3 == K_MAC && !(md == M_WG && bias_row)) begin   // the bias row is not a weight MAC
                if (md == M_FP) begin mac_fp <= mac_fp + pop; ent_fp <= ent_fp + 1; end
                else if (md == M_BP) begin mac_bp <= mac_bp + pop; ent_bp <= ent_bp + 1; end
                else begin mac_wg <= mac_wg + pop; ent_wg <= ent_wg + 1; end
            end
            // ---- pipeline ----
            v1 <= v0; k1 <= k0; dir1 <= dir0; daddr1 <= daddr0; didx1 <= didx0; dval1 <= dval0;
            v2 <= v1; k2 <= k1;
            v3 <= v2; k3 <= k2; a3 <= a2; lane3 <= lane2; vsel3 <= vsel2; en3_fix <= en2; wg3 <= wg2; bp3 <= bp2;
            v4 <= v3;
            v0 <= 1'b0;
            if (v1) begin
                a2 <= val1;
                wg2 <= 1'b0;
                bp2 <= 1'b0;
                vsel2 <= 1'b0;
                if (dir1 && k1 != K_MAC) begin          // update operation or load: a WMEM word
                    wm_ra <= daddr1;
                    en2   <= (k1 == K_LOAD) ? {L{1'b1}} : bounds;
                end else if (md == M_FP) begin
                    wm_ra <= (dir1 ? daddr1 : wf + idx1 * kt_n + {8'd0, t});
                    en2   <= bounds;
                end else if (md == M_BP) begin
                    wm_ra <= wb + idx1 * ct_n + {8'd0, t};
                    dm_ra <= d_in + p * kt_n + (idx1 >> LB);
                    lane2 <= idx1[LB-1:0];
                    bp2   <= 1'b1;
                    en2   <= tgate;
                end else begin
                    dm_ra <= d_in + idx1 * kt_n + {8'd0, t};
                    sm_ra <= s_out + idx1 * kt_n + {8'd0, t};
                    vsel2 <= 1'b1;
                    wg2   <= 1'b1;
                    en2   <= bounds;
                end
            end
            // ---- control ----
            case (state)
            S_IDLE: if (start) begin
                md <= mode; p <= 0; t <= 0; c <= (mode == M_WG && !flags[F_TRAIN_W]) ? c_in : 16'd0;
                state <= S_TILE;
            end
            S_TILE: begin
                clear_r <= 1'b1;
                if (md == M_FP) begin
                    if (flags[F_BIAS]) issue_direct(K_LOAD, wf + c_in * kt_n + {8'd0, t}, 16'd0, ONE);
                    pm_ra <= p_in + {8'd0, p};
                    state <= S_PTR_W;
                end else if (md == M_BP) begin
                    pm_ra <= p_g + {8'd0, p};
                    sm_ra <= s_in + p * ct_n + {8'd0, t};
                    state <= S_PTR_W;
                end else begin
                    e      <= 0;
                    e_end  <= bias_row ? {8'd0, n} : {8'd0, cnt_sel};
                    g_tile <= g_in + (c >> LB) * nmax;
                    state  <= S_STREAM;
                end
            end
            S_PTR_W: state <= S_PTR_G;
            S_PTR_G: begin
                e     <= pm_rd[15:0];
                e_end <= pm_rd[31:16];
                if (md == M_BP) begin
                    tgate <= lin3 & bounds;
                    if ((lin3 & bounds) == {L{1'b0}}) begin   // no lane of this tile in G: nothing to compute
                        dm_we <= {L{1'b1}};
                        dm_wa <= d_out + p * ct_n + {8'd0, t};
                        dm_wd <= 0;
                        state <= S_NEXT;
                    end else
                        state <= S_STREAM;
                end else
                    state <= S_STREAM;
            end
            S_STREAM:
                if (e == e_end) state <= S_DRAIN;
                else begin
                    if (md == M_WG && bias_row) issue_direct(K_MAC, 16'd0, e, ONE);
                    else issue_list((md == M_WG) ? g_tile + e : e);
                    e <= e + 1'b1;
                end
            S_DRAIN: if (drained) state <= S_WRITE;
            S_WRITE:
                if (md == M_FP) begin
                    if (est_ready) begin
                        est_valid  <= 1'b1;
                        est_word   <= acc;
                        est_bounds <= bounds;
                        est_p      <= p;
                        est_kt     <= t;
                        est_last   <= (t + 1'b1 == kt_n);
                        state      <= S_NEXT;
                    end
                end else if (md == M_BP) begin
                    dm_we <= {L{1'b1}};
                    dm_wa <= d_out + p * ct_n + {8'd0, t};
                    for (i = 0; i < L; i = i + 1)
                        dm_wd[32*i +: 32] <= tgate[i] ? acc[32*i +: 32] : 32'd0;
                    state <= S_NEXT;
                end else if (flags[F_GRAD]) begin
                    wm_we <= {L{1'b1}};
                    wm_wa <= gr + c * kt_n + {8'd0, t};
                    for (i = 0; i < L; i = i + 1)
                        wm_wd[32*i +: 32] <= bounds[i] ? acc[32*i +: 32] : 32'd0;
                    state <= S_NEXT;
                end else
                    state <= S_U_WD;
            S_U_WD: begin
                if (flags[F_WD]) issue_direct(K_UPD, row_w, 16'd0, wd);
                state <= S_U_MOM;
            end
            S_U_MOM: begin
                if (flags[F_MOM] && has_buf) issue_direct(K_UPD, row_m, 16'd0, mom);
                state <= S_U_DR1;
            end
            S_U_DR1: if (drained) state <= S_U_WMF;
            S_U_WMF: begin                       // the new momentum (or, without momentum, the step)
                wm_we <= {L{1'b1}};
                wm_wa <= row_m;
                for (i = 0; i < L; i = i + 1)
                    wm_wd[32*i +: 32] <= bounds[i] ? acc[32*i +: 32] : 32'd0;
                state <= S_U_LD;
            end
            S_U_LD: begin
                issue_direct(K_LOAD, row_w, 16'd0, ONE);
                state <= S_U_LR;
            end
            S_U_LR: begin
                issue_direct(K_UPD, row_m, 16'd0, lr_neg);
                state <= S_U_DR2;
            end
            S_U_DR2: if (drained) state <= S_U_WWF;
            S_U_WWF: begin
                wm_we <= {L{1'b1}};
                wm_wa <= row_w;
                for (i = 0; i < L; i = i + 1)
                    wm_wd[32*i +: 32] <= bounds[i] ? acc[32*i +: 32] : 32'd0;
                ti    <= 0;
                state <= (flags[F_WB] && !bias_row) ? S_TRANS : S_NEXT;
            end
            S_TRANS:                             // WB[k, c] := W[c, k] for the K lanes of this tile
                if (ti == L || !bounds[ti[LB-1:0]]) state <= S_NEXT;
                else begin
                    wm_we <= {{(L-1){1'b0}}, 1'b1} << bank;
                    wm_wa <= wb + ({8'd0, t} * L + ti) * ct_n + (c >> LB);
                    wm_wd <= {L{acc[32*ti[LB-1:0] +: 32]}};
                    ti    <= ti + 1'b1;
                end
            S_NEXT: begin
                state <= S_TILE;
                if (t + 1'b1 < nt) t <= t + 1'b1;
                else begin
                    t <= 0;
                    if (md == M_WG) begin
                        if (c < r_last) c <= c + 1'b1;
                        else state <= S_IDLE;
                    end else if (p + 1'b1 < n) p <= p + 1'b1;
                    else state <= S_IDLE;
                end
            end
            default: state <= S_IDLE;
            endcase
        end
    end
endmodule
