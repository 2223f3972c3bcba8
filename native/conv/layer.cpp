// The conv/gemm layer: geometry, and forward/backward as a sequence of phases, each run by the
// kernel family chosen for this layer and phase (docs/ARCHITECTURE.md, "The kernels").
#include "internal.hpp"

namespace et {

KernelPolicy& kernel_policy() {
    static KernelPolicy p = KP_AUTO;
    return p;
}

static bool use_walk(bool listed, double density) {
    switch (kernel_policy()) {
        case KP_TILED: return false;
        case KP_WALK: return listed;
        default: return listed && density < kWalkDensity;
    }
}

static double density(const ActInfo& I, bool g) {
    const double n = double(I.P) * double(I.C);
    return n > 0 ? double(g ? I.cnt_g : I.nnz_a) / n : 1.0;
}

ConvLayer::ConvLayer(int C_, int K_, int R_, int S_, int sh_, int sw_, int pt_, int pl_, int pb_, int pr_, int dh_,
                     int dw_, int groups_, int act_, float alpha_, float lo_, float hi_)
    : C(C_), K(K_), R(R_), S(S_), sh(sh_), sw(sw_), pt(pt_), pl(pl_), pb(pb_), pr(pr_), dh(dh_), dw(dw_),
      groups(groups_), act(act_), alpha(alpha_), lo(lo_), hi(hi_) {
    if (C <= 0 || K <= 0 || R <= 0 || S <= 0) throw std::invalid_argument("conv: channels and kernel must be positive");
    if (sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0) throw std::invalid_argument("conv: stride and dilation must be positive");
    if (pt < 0 || pl < 0 || pb < 0 || pr < 0) throw std::invalid_argument("conv: pads must be non-negative");
    if (groups <= 0 || C % groups || K % groups)
        throw std::invalid_argument("conv: groups must divide in and out channels");
    check_range(C, 1, kMaxDim, "conv: in channels");
    check_range(K, 1, kMaxDim, "conv: out channels");
    for (i64 v : {(i64)R, (i64)S, (i64)sh, (i64)sw, (i64)dh, (i64)dw, pt + i64(1), pl + i64(1), pb + i64(1), pr + i64(1)})
        check_range(v, 1, kMaxGeometry, "conv: a kernel size, stride, dilation or pad (+1)");
    check_range((i64)K * (C / groups) * R * S, 1, kMaxElems, "conv: weight elements");
    kind_of(act, lo, hi);  // validates the activation code
    Cg = C / groups;
    Kg = K / groups;
    Kp = round_up(Kg, VW);
    Cp = round_up(Cg, VW);
    KpAll = groups * Kp;
    depthwise = groups > 1 && Cg == 1 && Kg == 1;
    pointwise = R == 1 && S == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0;
}

void ConvLayer::out_shape(int H_, int W_, int& OH_, int& OW_) const {
    check_range(H_, 1, kMaxDim, "conv: input height");
    check_range(W_, 1, kMaxDim, "conv: input width");
    // in i64: the limits above and in the constructor keep every term far from overflow
    const i64 spanh = (i64)H_ + pt + pb - (i64)dh * (R - 1) - 1, spanw = (i64)W_ + pl + pr - (i64)dw * (S - 1) - 1;
    if (spanh < 0 || spanw < 0)
        throw std::invalid_argument("conv: input " + std::to_string(H_) + "x" + std::to_string(W_) +
                                    " is smaller than the (dilated) kernel");
    OH_ = int(spanh / sh + 1);
    OW_ = int(spanw / sw + 1);
}

// WG pixel tile of the list walk: the d rows a tile touches (~16 KB) stay in L1 while every
// (c, r, s) row of dW is accumulated over it. The tile grows as the input gets sparser so that
// each (c, r, s) row still sees enough entries per tile to amortise its dW row update.
int ConvLayer::tile_px() const {
    double dens = 1.0;
    if (in && !in->a_all && in->P * in->C > 0) dens = std::max(0.05, double(in->nnz_a) / double(in->P * in->C));
    // WG walks one 64-channel slice of K at a time: footprint = tile * slice
    int t = int(ET_TILE_BYTES / (4 * std::min(std::max(Kp, 8), KB)) / dens);
    return std::max(8, std::min(t, 4096));
}

InfoPtr ConvLayer::forward(const InfoPtr& x0, bool dense_, float* a_out, bool out_dense, bool keep_values) {
    if (!has_w) throw std::runtime_error("conv: set_weights must be called before forward");
    const double t0 = now_ms();
    const CpuClock cpu;
    if (x0->C != C) throw std::invalid_argument("conv: input has " + std::to_string(x0->C) + " channels, layer expects " + std::to_string(C));
    // sparse mode takes a dense-mode input as it is (its producer found too
    // few zeros to be worth listing): the kernels then iterate it densely
    InfoPtr x = dense_ ? to_mode(x0, true) : x0;
    dense = dense_;
    N = x->N; H = x->H; W = x->W;
    out_shape(H, W, OH, OW);
    in = x;
    InfoPtr o = make_info(N, OH, OW, K, act, alpha, lo, hi, dense_ || out_dense);
    // hard-swish and sigmoid need their stored values for f' in this layer's BP
    o->has_values = keep_values || act == ACT_HSWISH || act == ACT_SIGMOID;
    Epi E;
    E.init(o.get(), a_out);
    if (depthwise) {
        kern_fp = "depthwise";
        fp_depthwise(x, E);
    } else if (use_walk(!x->a_all, density(*x, false))) {
        kern_fp = "walk";
        fp_walk(x, E);
    } else {
        kern_fp = "tiled";
        fp_tiled(x, E);
        if (!x->a_all) x->drop_caches();  // the dense copy made for these kernels
    }
    E.finish();
    cfp.dense = dense_macs();
    tfp += cfp;
    out = o;
    ms_fp = now_ms() - t0;
    cpu_fp = cpu.ms();
    return o;
}

bool ConvLayer::wg_geo(TGeo& G) const {
    // the tap bits and q share one 32-bit code
    if (pointwise || sh != 1 || sw != 1 || R * S > 24 || ((i64)H * OW + W) >= (i64(1) << (32 - R * S))) return false;
    G.R = R; G.S = S; G.pt = pt; G.pl = pl; G.dh = dh; G.dw = dw; G.OH = OH; G.OW = OW;
    return true;
}

void ConvLayer::backward(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db) {
    if (!out || !in) throw std::runtime_error("conv: backward called before forward");
    if (prevG && (prevG->N != N || prevG->H != H || prevG->W != W || prevG->C != C))
        throw std::invalid_argument("conv: prev_info shape does not match the layer input");
    if (depthwise) bwd_depthwise(grad_a, g_in, prevG, dW, db);
    else bwd_general(grad_a, g_in, prevG, dW, db);
    tbp += cbp;
    twg += cwg;
}

void ConvLayer::bwd_general(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db) {
    const double t0 = now_ms();
    const CpuClock c0;
    ActInfo& O = *out;
    const i64 Pout = O.P;
    const bool need_wg = dW != nullptr;
    const bool need_bp = g_in != nullptr;
    kern_wg = "";
    RowView GV = O.view_g(groups);
    // BP walks the G lists (the error d in the broadcast role) where G is sparse enough, else
    // runs the tiled kernels over dense d rows
    const bool bp_walks = need_bp && use_walk(!GV.all, density(O, true));
    kern_bp = need_bp ? (bp_walks ? "walk" : "tiled") : "";
    ABuf<i32> decoded;
    if (bp_walks) materialize(GV, decoded);
    const i64 nd = GV.all ? Pout * K : (O.g_same ? O.nnz_a : O.nnz_g);
    // scratch of this call only (the block recycler hands the same memory to the next layer)
    ABuf<float> Dbuf, dvbuf;
    const bool need_D = need_wg || (need_bp && !bp_walks);
    if (need_D) {
        Dbuf.reset((size_t)(Pout + 1) * KpAll);  // + a zero row: taps outside the image read it
        std::memset(Dbuf.data() + Pout * KpAll, 0, sizeof(float) * KpAll);
    }
    if (bp_walks) dvbuf.reset((size_t)std::max<i64>(nd, 1) + 8);  // + slack: whole 8-lane stores
    grad_prologue(grad_a, GV, need_D ? Dbuf.data() : nullptr, bp_walks ? dvbuf.data() : nullptr, db);
    const i32* gc = O.group_counts(1, groups);
    cbp = Counts();
    cwg = Counts();
    const double t1 = now_ms(), c1 = c0.ms();
    const CpuClock cb;
    if (bp_walks) bp_walk(GV, dvbuf.data(), gc, g_in, prevG);
    else if (need_bp) bp_tiled(Dbuf.data(), g_in, prevG);
    decoded.clear();  // WG reads D and the input's lists, not G: its peak need not hold these
    dvbuf.clear();
    const double t2 = now_ms(), c2 = cb.ms();
    const CpuClock cw;
    if (need_wg) wg_phase(Dbuf.data(), gc, dW);
    phase_times(t0, t1, t2, now_ms(), need_bp);
    cpu_bp = c2 + (need_bp ? c1 : 0.0);
    cpu_wg = cw.ms() + (need_bp ? 0.0 : c1);
}

// WG: the chosen kernel into packed rows [g][rs][c][Kp], then OIHW.
void ConvLayer::wg_phase(const float* D, const i32* gc, float* dW) {
    cwg.dense = dense_macs();
    ABuf<float> dWp;
    const i64 nz = (i64)groups * R * S * Cg * Kp;
    dWp.reset((size_t)nz);
    float* z = dWp.data();
    parallel_for(nz, 4096, [&](i64 b, i64 e, int) { std::memset(z + b, 0, sizeof(float) * (e - b)); });
    if (wg_by_im2col()) {
        kern_wg = "im2col";
        cwg.executed = wg_im2col(D, dWp.data());
    } else if (use_walk(!in->a_all, density(*in, false))) {
        kern_wg = "walk";
        cwg.executed = wg_walk(D, gc, dWp.data());
    } else {
        kern_wg = "tiled";
        cwg.executed = wg_tiled(D, gc, dWp.data());
        in->drop_caches();  // the dense copy made for these kernels
    }
    cwg.required = wg_required(gc);
    store_dw(dWp.data(), dW);
}

// WG of a first conv (few channels, dense input): dW rows (tap, channel) x K accumulate outer
// products of the joined input taps (im2col rows of a tile of output pixels) and the d rows.
bool ConvLayer::wg_by_im2col() const {
    return groups == 1 && R * S > 1 && R * S * Cg <= IM2COL_MAX && dw == 1 && in && in->a_all;
}

// The d = grad_a * f'(z) prologue serves both phases; it is booked to BP (the
// error propagation) when BP runs, else to WG.
void ConvLayer::phase_times(double t0, double t1, double t2, double t3, bool bp) {
    ms_bp = (t2 - t1) + (bp ? t1 - t0 : 0.0);
    ms_wg = (t3 - t2) + (bp ? 0.0 : t1 - t0);
}

}  // namespace et
