// The non-zero position-estimation unit (docs/HARDWARE.md). It takes each output tile of FP
// (L lanes of one sample p, lane tile kt, bias included) and, fused with the activation,
// writes everything BP and WG of the following phases read, so they start with their plan:
//
//   * the lanes' 2-bit states (00 zero, 01 linear: in G) -> state memory, word s_base + p*kt_n + kt
//   * the activation's non-zeros as the next layer's per-sample list (index, value), in
//     ascending index order -> list memory from l_base, and per sample {end, start} -> pointer
//     memory p_base + p; the same list gives BP of this layer its G positions
//   * the same non-zeros as per-channel lists over samples (sample, value) for WG, one
//     bank per lane (channel kt*L + j lives in bank j at g_base + kt*nmax + count), all lanes
//     in one cycle; the counts stay in this unit (read port cnt_ra/cnt_rd)
//   * optionally the dense values -> data memory z_base + p*kt_n + kt (the logits for the loss)
//
// act: 0 ReLU (keep z > 0, a = keep ? z : 0), 1 none (every lane in bounds, a = z),
//      2 non-zero (keep a != 0: the network input the CPU pushes, a = z).
// Tiles arrive in sample-major order (all kt of p = 0 first); p = 0 restarts the counts and
// kt = 0 of p = 0 the list. The per-sample list is written one entry per cycle after the
// parallel writes; `ready` is low meanwhile.
module pos_estimator #(
    parameter L   = 16,
    parameter LB  = 4,        // log2(L)
    parameter GAW = 9,        // per-bank WG list memory
    parameter CAW = 5         // per-lane count memory
) (
    input  wire            clk,
    input  wire            rst,
    input  wire            in_valid,
    output wire            ready,
    input  wire [32*L-1:0] in_word,
    input  wire [L-1:0]    in_bounds,
    input  wire [7:0]      in_p,
    input  wire [7:0]      in_kt,
    input  wire            in_last,      // last lane tile of the sample
    input  wire [1:0]      act,
    input  wire [7:0]      kt_n,
    input  wire [8:0]      nmax,
    input  wire [15:0]     p_base,
    input  wire [15:0]     l_base,
    input  wire [15:0]     g_base,
    input  wire [15:0]     c_base,
    input  wire [15:0]     s_base,
    input  wire [15:0]     z_base,
    input  wire            z_en,
    // state memory
    output reg             s_we,
    output reg  [15:0]     s_wa,
    output reg  [2*L-1:0]  s_wd,
    // data memory (dense values)
    output reg             z_we,
    output reg  [15:0]     z_wa,
    output reg  [32*L-1:0] z_wd,
    // per-sample list and its pointers
    output reg             l_we,
    output reg  [15:0]     l_wa,
    output reg  [47:0]     l_wd,
    output reg             p_we,
    output reg  [15:0]     p_wa,
    output reg  [31:0]     p_wd,
    // per-channel (WG) lists, one bank per lane
    output reg  [L-1:0]    g_we,
    output reg  [GAW*L-1:0] g_wa,
    output reg  [40*L-1:0] g_wd,
    // counts of the WG lists (all lanes of one count word)
    input  wire [CAW-1:0]  cnt_ra,
    output wire [8*L-1:0]  cnt_rd,
    output reg  [31:0]     cnt_tiles,
    output reg  [31:0]     cnt_entries
);
    localparam A_RELU = 2'd0, A_NONE = 2'd1;

    reg  [L-1:0]    rem;          // lanes still to write into the per-sample list
    reg  [32*L-1:0] vals;
    reg  [7:0]      cur_kt;
    reg             cur_last;
    reg  [7:0]      cur_p;
    reg  [15:0]     l_ptr, l_start;
    reg             ser;          // serialising

    // -- per lane: keep, value, state, count ----------------------------------------------------
    wire [L-1:0]    keep;
    wire [32*L-1:0] aval;
    wire [CAW-1:0]  cnt_wa = c_base[CAW-1:0] + in_kt[CAW-1:0];
    wire            take = in_valid && !ser;
    genvar j;
    generate for (j = 0; j < L; j = j + 1) begin : lane
        wire [31:0] z   = in_word[32*j +: 32];
        wire        pos = !z[31] && (z[30:23] != 8'd0);
        assign keep[j] = in_bounds[j] && ((act == A_RELU) ? pos : (act == A_NONE) ? 1'b1 : (z[30:0] != 31'd0));
        assign aval[32*j +: 32] = (act == A_RELU && !pos) || !in_bounds[j] ? 32'd0 : z;

        reg [7:0] cnt [0:(1 << CAW) - 1];
        wire [7:0] now = (in_p == 8'd0) ? 8'd0 : cnt[cnt_wa];
        assign cnt_rd[8*j +: 8] = cnt[cnt_ra];
        always @(posedge clk) begin
            if (take) cnt[cnt_wa] <= now + {7'd0, keep[j]};
            g_we[j] <= take && keep[j];
            g_wa[GAW*j +: GAW] <= g_base[GAW-1:0] + in_kt * nmax + {{(GAW-8){1'b0}}, now};
            g_wd[40*j +: 40] <= {in_p, aval[32*j +: 32]};
        end
    end endgenerate

    // lowest lane still to write
    function [LB-1:0] first_set;
        input [L-1:0] v;
        integer k;
        begin
            first_set = {LB{1'b0}};
            for (k = L - 1; k >= 0; k = k - 1)
                if (v[k]) first_set = k[LB-1:0];
        end
    endfunction
    wire [LB-1:0] jn = first_set(rem);
    // idle only once the last registered writes have landed
    assign ready = !ser && !s_we && !z_we && !l_we && !p_we && (g_we == {L{1'b0}});

    integer i;
    always @(posedge clk) begin
        s_we <= 1'b0;
        z_we <= 1'b0;
        l_we <= 1'b0;
        p_we <= 1'b0;
        if (rst) begin
            rem <= 0; vals <= 0; cur_kt <= 0; cur_last <= 0; cur_p <= 0; l_ptr <= 0; l_start <= 0; ser <= 0;
            s_wa <= 0; s_wd <= 0; z_wa <= 0; z_wd <= 0; l_wa <= 0; l_wd <= 0; p_wa <= 0; p_wd <= 0;
            cnt_tiles <= 0; cnt_entries <= 0;
        end else if (take) begin
            s_we <= 1'b1;
            s_wa <= s_base + in_p * kt_n + {8'd0, in_kt};
            for (i = 0; i < L; i = i + 1)
                s_wd[2*i +: 2] <= {1'b0, keep[i]};
            z_we <= z_en;
            z_wa <= z_base + in_p * kt_n + {8'd0, in_kt};
            z_wd <= aval;
            vals     <= aval;
            rem      <= keep;
            cur_kt   <= in_kt;
            cur_last <= in_last;
            cur_p    <= in_p;
            if (in_kt == 8'd0) begin
                l_start <= (in_p == 8'd0) ? l_base : l_ptr;
                if (in_p == 8'd0) l_ptr <= l_base;
            end
            ser <= 1'b1;
            cnt_tiles <= cnt_tiles + 1;
        end else if (ser) begin
            if (rem != {L{1'b0}}) begin
                l_we  <= 1'b1;
                l_wa  <= l_ptr;
                l_wd  <= {{(8 - LB){1'b0}}, cur_kt, jn, vals[32*jn +: 32]};
                l_ptr <= l_ptr + 1'b1;
                rem[jn] <= 1'b0;
                cnt_entries <= cnt_entries + 1;
            end else begin
                if (cur_last) begin
                    p_we <= 1'b1;
                    p_wa <= p_base + {8'd0, cur_p};
                    p_wd <= {l_ptr, l_start};
                end
                ser <= 1'b0;
            end
        end
    end
endmodule
