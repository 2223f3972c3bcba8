// Sparse PE-array core: one layer's FP, BP or WG for a gemm (1x1 kernel on 1x1 images)
// or a 3x3 stride-1 convolution (pad 1), NHWC, driven by the non-zero lists and the
// state masks the activation constraints give (docs/HARDWARE.md):
//
//   FP  z[p, k]       = sum over taps, over the non-zero list of input pixel p+tap (c, a)
//                       of a * W[tap, c, k]                           lanes: k (a tile of L)
//   BP  g[q, c]       = sum over taps, over the G list of output pixel q-tap (k, d)
//                       of d * W[tap, c, k], lanes gated by q's G state (c)   lanes: c
//   WG  dW[tap, c, k] = sum over the non-zero list of channel c (pixel q, a)
//                       of a * d[q-tap, k], lanes gated by the G state of q-tap    lanes: k
//
// ROWS x COLS PEs share the broadcast operand of a cycle (one list entry); each PE holds
// one output lane's fp32 accumulator (output stationary) and reads its weight or error
// from its row's bank of the vector word. Only list entries are issued, so zeros are
// never searched for; a lane whose output the G state excludes is gated (no multiply).
// Lane states: 2 bits, 00 zero, 01 linear (in G), 10 saturated (ReLU6 at 6: in A, not G).
//
// Pipeline, one list entry per cycle: list read (2 cycles, block RAM) -> vector/state read
// (2 cycles) -> multiply -> add.
// fp32: fp32_mul.v / fp32_add.v (round to nearest even, subnormals flushed).
module pe_core #(
    parameter ROWS = 8,
    parameter COLS = 8,
    parameter PAW  = 10,     // pointer memory: one {end, start} per pixel (FP/BP) or channel (WG)
    parameter LAW  = 13,     // list memory: {index, fp32 value}
    parameter VAW  = 10,     // vector memory: one L-lane fp32 word per (tap, c|k, tile) or (pixel, tile)
    parameter OAW  = 10,     // output memory
    parameter LDW  = (32 * ROWS * COLS > 48) ? 32 * ROWS * COLS : 48   // load port width
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire [1:0]  mode,        // 0 FP, 1 BP, 2 WG
    input  wire [4:0]  n_img,
    input  wire [6:0]  h,
    input  wire [6:0]  w,
    input  wire [15:0] c_in,
    input  wire [15:0] k_out,
    input  wire [1:0]  ks,          // kernel size: 1 or 3
    input  wire [7:0]  ct,          // ceil(c_in / L)
    input  wire [7:0]  kt,          // ceil(k_out / L)
    output wire        busy,
    output reg         done,
    output reg  [31:0] cycles,
    output reg  [31:0] macs,        // multiplies executed (= enabled lanes of issued entries)
    output reg  [31:0] terms,       // list entries issued
    output reg  [31:0] tiles,       // output words written
    // load port (use while idle): one full word of the memory ld_sel names per cycle,
    // 0 pointers (32 bits), 1 list entries (48), 2 vector words (32*L), 3 lane states (2*L),
    // in the low bits of ld_data (a board puts a DMA and width converter in front of it)
    input  wire             ld_we,
    input  wire [1:0]       ld_sel,
    input  wire [15:0]      ld_addr,
    input  wire [LDW-1:0]   ld_data,
    // result port: output word out_ra appears on out_rd one cycle later
    input  wire [OAW-1:0]   out_ra,
    output wire [32*ROWS*COLS-1:0] out_rd
);
    localparam L = ROWS * COLS;
    localparam M_FP = 2'd0, M_BP = 2'd1, M_WG = 2'd2;
    localparam S_IDLE = 4'd0, S_TILE = 4'd1, S_TG_WAIT = 4'd2, S_TG_GOT = 4'd3, S_SEG = 4'd4,
               S_PTR_WAIT = 4'd5, S_PTR_GOT = 4'd6, S_STREAM = 4'd7, S_DRAIN = 4'd8, S_WRITE = 4'd9,
               S_NEXT = 4'd10;

    reg  [3:0]  state;
    assign busy = (state != S_IDLE);

    // -- memories (written through the load port; out is read through the result port) ------
    reg  [PAW-1:0]   ptr_ra;
    wire [31:0]      ptr_rd;
    ram_sdp #(.AW(PAW), .DW(32)) u_ptr (.clk(clk), .we(ld_we && ld_sel == 2'd0), .waddr(ld_addr[PAW-1:0]),
        .wdata(ld_data[31:0]), .raddr(ptr_ra), .rdata(ptr_rd));
    reg  [LAW-1:0]   lst_ra;
    wire [47:0]      lst_rd;
    ram_sdp #(.AW(LAW), .DW(48)) u_lst (.clk(clk), .we(ld_we && ld_sel == 2'd1), .waddr(ld_addr[LAW-1:0]),
        .wdata(ld_data[47:0]), .raddr(lst_ra), .rdata(lst_rd));
    reg  [VAW-1:0]   vec_ra;
    wire [32*L-1:0]  vec_rd;
    ram_sdp #(.AW(VAW), .DW(32 * L)) u_vec (.clk(clk), .we(ld_we && ld_sel == 2'd2), .waddr(ld_addr[VAW-1:0]),
        .wdata(ld_data[32*L-1:0]), .raddr(vec_ra), .rdata(vec_rd));
    reg  [VAW-1:0]   gate_ra;
    wire [2*L-1:0]   gate_rd;
    ram_sdp #(.AW(VAW), .DW(2 * L)) u_gate (.clk(clk), .we(ld_we && ld_sel == 2'd3), .waddr(ld_addr[VAW-1:0]),
        .wdata(ld_data[2*L-1:0]), .raddr(gate_ra), .rdata(gate_rd));
    reg              out_we;
    reg  [OAW-1:0]   out_wa;
    reg  [32*L-1:0]  out_wd;
    ram_sdp #(.AW(OAW), .DW(32 * L)) u_out (.clk(clk), .we(out_we), .waddr(out_wa), .wdata(out_wd),
        .raddr(out_ra), .rdata(out_rd));

    // -- loop state ----------------------------------------------------------------------------
    reg  [4:0]  n;            // tile pixel (FP: output pixel, BP: input pixel)
    reg  [6:0]  y, x;
    reg  [15:0] pix;
    reg  [15:0] ch;           // WG: channel of the tile
    reg  [3:0]  tap, wtap;    // segment tap; WG: the tile's tap
    reg  [7:0]  t;            // lane tile
    reg  [15:0] e, e_end;     // list entries of the open segment
    reg  [L-1:0] tgate;       // lanes of this tile (FP: in bounds, BP: G state of the input pixel)
    reg  [15:0] vbase;

    wire [1:0]  pad  = (ks == 2'd3) ? 2'd1 : 2'd0;
    wire [3:0]  ntap = (ks == 2'd3) ? 4'd9 : 4'd1;
    wire [7:0]  nt   = (mode == M_BP) ? ct : kt;
    // tap -> (dy, dx) in -pad..pad
    wire [1:0]  tr = (ks == 2'd3) ? ((tap >= 4'd6) ? 2'd2 : (tap >= 4'd3) ? 2'd1 : 2'd0) : 2'd0;
    wire [1:0]  ts = (ks == 2'd3) ? tap - 4'd3 * {2'd0, tr} : 2'd0;
    wire signed [8:0] dy = $signed({7'd0, tr}) - $signed({7'd0, pad});
    wire signed [8:0] dx = $signed({7'd0, ts}) - $signed({7'd0, pad});
    // FP reads input pixel (y+dy, x+dx); BP reads output pixel (y-dy, x-dx)
    wire signed [8:0] ny = (mode == M_FP) ? $signed({2'd0, y}) + dy : $signed({2'd0, y}) - dy;
    wire signed [8:0] nx = (mode == M_FP) ? $signed({2'd0, x}) + dx : $signed({2'd0, x}) - dx;
    wire        nb_ok = ny >= 0 && nx >= 0 && ny < $signed({2'd0, h}) && nx < $signed({2'd0, w});
    wire [15:0] hw   = h * w;
    wire [15:0] nb_pix = n * hw + ny[6:0] * w + nx[6:0];

    // -- pipeline --------------------------------------------------------------------------------
    // p0: list address issued; p1: entry on lst_rd
    reg         v0, v1;
    reg  [3:0]  tap1;
    // WG: the entry's pixel q = {n, iy, ix}; its error comes from output pixel q - tap
    wire [3:0]  qn  = lst_rd[47:44];
    wire [5:0]  qy  = lst_rd[43:38], qx = lst_rd[37:32];
    wire [1:0]  wr_ = (ks == 2'd3) ? ((wtap >= 4'd6) ? 2'd2 : (wtap >= 4'd3) ? 2'd1 : 2'd0) : 2'd0;
    wire [1:0]  ws_ = (ks == 2'd3) ? wtap - 4'd3 * {2'd0, wr_} : 2'd0;
    wire signed [8:0] oy = $signed({3'd0, qy}) - ($signed({7'd0, wr_}) - $signed({7'd0, pad}));
    wire signed [8:0] ox = $signed({3'd0, qx}) - ($signed({7'd0, ws_}) - $signed({7'd0, pad}));
    wire        q_ok  = oy >= 0 && ox >= 0 && oy < $signed({2'd0, h}) && ox < $signed({2'd0, w});
    wire [15:0] q_pix = qn * hw + oy[6:0] * w + ox[6:0];
    wire [15:0] idx1  = lst_rd[47:32];
    // p2: vector/state address issued; p3 (v2): word on vec_rd / gate_rd
    reg         p2, v2, okq, ok2;
    reg  [31:0] aq, a2;
    // stage 3: products
    reg         v3;
    reg  [L-1:0]    en3;
    reg  [32*L-1:0] prod3;
    reg  [32*L-1:0] acc;

    wire [L-1:0] lane_g;      // lanes whose state is "linear" (in G)
    wire [L-1:0] en2 = (mode == M_WG) ? (ok2 ? lane_g : {L{1'b0}}) : tgate;
    wire [32*L-1:0] prod2, sum3;
    genvar j;
    generate for (j = 0; j < L; j = j + 1) begin : lane
        assign lane_g[j] = (gate_rd[2*j +: 2] == 2'b01);
        fp32_mul u_mul (.a(a2), .b(vec_rd[32*j +: 32]), .y(prod2[32*j +: 32]));
        fp32_add u_add (.a(acc[32*j +: 32]), .b(prod3[32*j +: 32]), .y(sum3[32*j +: 32]));
    end endgenerate

    integer i;
    reg [7:0] pop;
    always @* begin
        pop = 8'd0;
        for (i = 0; i < L; i = i + 1) pop = pop + {7'd0, en2[i]};
    end

    // lanes of tile t that exist (lane index + t*L below the channel count)
    reg [L-1:0] bounds;
    always @* begin
        for (i = 0; i < L; i = i + 1)
            bounds[i] = ({16'd0, t} * L + i) < ((mode == M_BP) ? {16'd0, c_in} : {16'd0, k_out});
    end

    always @(posedge clk) begin
        out_we <= 1'b0;
        done   <= 1'b0;
        if (rst) begin
            state <= S_IDLE; v0 <= 0; v1 <= 0; p2 <= 0; v2 <= 0; v3 <= 0; acc <= 0; en3 <= 0; prod3 <= 0;
            ok2 <= 0; a2 <= 0; okq <= 0; aq <= 0;
            cycles <= 0; macs <= 0; terms <= 0; tiles <= 0; n <= 0; y <= 0; x <= 0; pix <= 0; ch <= 0;
            tap <= 0; wtap <= 0; t <= 0; e <= 0; e_end <= 0; tgate <= 0; vbase <= 0; tap1 <= 0;
            ptr_ra <= 0; lst_ra <= 0; vec_ra <= 0; gate_ra <= 0; out_wa <= 0; out_wd <= 0;
        end else begin
            if (busy) cycles <= cycles + 1;
            // ---- pipeline (runs whatever the sequencer does) ----
            v1 <= v0;
            p2 <= v1;
            v2 <= p2;
            a2 <= aq;
            ok2 <= okq;
            if (v1) begin
                aq <= lst_rd[31:0];
                if (mode == M_WG) begin
                    okq     <= q_ok;
                    vec_ra  <= q_pix * kt + t;
                    gate_ra <= q_pix * kt + t;
                end else begin
                    okq    <= 1'b1;
                    vec_ra <= vbase + idx1 * ((mode == M_FP) ? kt : ct);
                end
            end
            v3 <= v2;
            if (v2) begin
                en3   <= en2;
                prod3 <= prod2;
                terms <= terms + 1;
                macs  <= macs + pop;
            end
            if (v3)
                for (i = 0; i < L; i = i + 1)
                    if (en3[i]) acc[32*i +: 32] <= sum3[32*i +: 32];
            v0 <= 1'b0;
            // ---- sequencer ----
            case (state)
            S_IDLE: if (start) begin
                cycles <= 0; macs <= 0; terms <= 0; tiles <= 0;
                n <= 0; y <= 0; x <= 0; pix <= 0; ch <= 0; wtap <= 0; t <= 0; acc <= 0;
                state <= S_TILE;
            end
            S_TILE: begin
                tap <= 0;
                if (mode == M_BP) begin
                    gate_ra <= pix * ct + t;      // the input pixel's G states for this tile
                    state   <= S_TG_WAIT;
                end else begin
                    tgate <= bounds;
                    state <= S_SEG;
                end
            end
            S_TG_WAIT: state <= S_TG_GOT;
            S_TG_GOT: begin
                tgate <= lane_g & bounds;
                // no lane of this tile is in G: its error is not needed, nothing is issued
                state <= ((lane_g & bounds) == {L{1'b0}}) ? S_WRITE : S_SEG;
            end
            S_SEG:
                if (mode == M_WG) begin
                    if (tap != 0) state <= S_DRAIN;
                    else begin
                        ptr_ra <= ch[PAW-1:0];
                        tap    <= 4'd1;
                        state  <= S_PTR_WAIT;
                    end
                end else if (tap == ntap)
                    state <= S_DRAIN;
                else if (!nb_ok)
                    tap <= tap + 1'b1;
                else begin
                    ptr_ra <= nb_pix[PAW-1:0];
                    // FP: W[(tap*C + c)*KT + t]; BP: W^T[(tap*K + k)*CT + t]
                    vbase  <= (mode == M_FP) ? tap * c_in * kt + t : tap * k_out * ct + t;
                    state  <= S_PTR_WAIT;
                end
            S_PTR_WAIT: state <= S_PTR_GOT;
            S_PTR_GOT: begin
                e     <= ptr_rd[15:0];
                e_end <= ptr_rd[31:16];
                state <= S_STREAM;
            end
            S_STREAM:
                if (e == e_end) begin
                    if (mode != M_WG) tap <= tap + 1'b1;
                    state <= S_SEG;
                end else begin
                    lst_ra <= e[LAW-1:0];
                    v0     <= 1'b1;
                    e      <= e + 1'b1;
                end
            S_DRAIN:
                if (!v0 && !v1 && !p2 && !v2 && !v3) state <= S_WRITE;
            S_WRITE: begin
                out_we <= 1'b1;
                out_wa <= (mode == M_FP) ? pix * kt + t :
                          (mode == M_BP) ? pix * ct + t : ({12'd0, wtap} * c_in + ch) * kt + t;
                for (i = 0; i < L; i = i + 1)
                    out_wd[32*i +: 32] <= tgate[i] || (mode == M_WG && bounds[i]) ? acc[32*i +: 32] : 32'd0;
                tiles <= tiles + 1;
                acc   <= 0;
                state <= S_NEXT;
            end
            S_NEXT: begin
                state <= S_TILE;
                if (t + 1'b1 < nt) t <= t + 1'b1;
                else begin
                    t <= 0;
                    if (mode == M_WG) begin
                        if (ch + 1'b1 < c_in) ch <= ch + 1'b1;
                        else begin
                            ch <= 0;
                            if (wtap + 1'b1 < ntap) wtap <= wtap + 1'b1;
                            else begin state <= S_IDLE; done <= 1'b1; end
                        end
                    end else begin
                        pix <= pix + 1'b1;
                        if (x + 1'b1 < w) x <= x + 1'b1;
                        else begin
                            x <= 0;
                            if (y + 1'b1 < h) y <= y + 1'b1;
                            else begin
                                y <= 0;
                                if (n + 1'b1 < n_img) n <= n + 1'b1;
                                else begin state <= S_IDLE; done <= 1'b1; end
                            end
                        end
                    end
                end
            end
            default: state <= S_IDLE;
            endcase
        end
    end
endmodule
