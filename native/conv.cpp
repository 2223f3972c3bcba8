// Sparse conv/gemm kernels. Loop structure (docs/ARCHITECTURE.md, "The kernels"): gather per output
// element with up to 8 vectors of accumulators held in registers, iterate the
// non-zero list of the sparse operand as the scalar broadcast operand.
#include "conv.hpp"

#include <chrono>

namespace et {

void fprime_row(ActInfo& I, i64 p, float* fp);

// out[i] = sum over threads of part[t][i], in double (threads that ran no rows have no part)
static void sum_threads(const std::vector<std::vector<double>>& part, float* out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (const auto& p : part) s += p.empty() ? 0.0 : p[i];
        out[i] = (float)s;
    }
}

static double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static constexpr int KB = 8 * VW;  // channels per register block
static constexpr int TPIX = 32;
#ifndef ET_TILE_BYTES
#define ET_TILE_BYTES 16384
#endif    // pixels per FP/BP tile (weight-block reuse)

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

void ConvLayer::set_weights(const float* w, const float* b) {
    const int RS = R * S;
    if (depthwise) {
        const int Cpad = round_up(C, VW);
        Wf.reset((size_t)RS * Cpad, true);
        for (int c = 0; c < C; c++)
            for (int rs = 0; rs < RS; rs++) Wf[(size_t)rs * Cpad + c] = w[(size_t)c * RS + rs];
        bias.reset(Cpad, true);
    } else {
        // sizes never change for a layer: allocate (zeroed padding) once, then overwrite
        if (Wf.size() != (size_t)groups * RS * Cg * Kp) Wf.reset((size_t)groups * RS * Cg * Kp, true);
        if (Wb.size() != (size_t)groups * RS * Kg * Cp) Wb.reset((size_t)groups * RS * Kg * Cp, true);
        if (bias.size() != (size_t)KpAll) bias.reset((size_t)KpAll, true);
        std::memset(bias.data(), 0, sizeof(float) * KpAll);
        // blocked transposes, parallel over (g, r, s, 64x64 blocks)
        constexpr int TB = 64;
        const int nkb = (Kg + TB - 1) / TB, ncb = (Cg + TB - 1) / TB;
        const i64 nblk = (i64)groups * RS * nkb * ncb;
        float* wf = Wf.data();
        float* wb = Wb.data();
#pragma omp parallel for schedule(static)
        for (i64 bi = 0; bi < nblk; bi++) {
            const int cbk = int(bi % ncb), kbk = int((bi / ncb) % nkb), rs = int((bi / ncb / nkb) % RS),
                      g = int(bi / ncb / nkb / RS);
            const int k0 = kbk * TB, k1 = std::min(Kg, k0 + TB), c0 = cbk * TB, c1 = std::min(Cg, c0 + TB);
            for (int kk = k0; kk < k1; kk++) {
                const float* src = w + (((size_t)(g * Kg + kk)) * Cg) * RS + rs;
                float* db = wb + (((size_t)g * RS + rs) * Kg + kk) * Cp;
                for (int cl = c0; cl < c1; cl++) db[cl] = src[(size_t)cl * RS];
            }
            for (int cl = c0; cl < c1; cl++) {
                float* df = wf + (((size_t)g * RS + rs) * Cg + cl) * Kp;
                const float* src = w + ((size_t)g * Kg * Cg + cl) * RS + rs;
                for (int kk = k0; kk < k1; kk++) df[kk] = src[(size_t)kk * Cg * RS];
            }
        }
    }
    has_bias = b != nullptr;
    if (b) {
        for (int k = 0; k < K; k++) {
            if (depthwise) bias[k] = b[k];
            else bias[(size_t)(k / Kg) * Kp + k % Kg] = b[k];
        }
    }
    has_w = true;
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

// WG pixel tile: the d rows a tile touches (~16 KB) stay in L1 while every
// (c, r, s) row of dW is accumulated over it.
// The tile grows as the input gets sparser so that each (c, r, s) row still
// sees enough entries per tile to amortise its dW row update.
int ConvLayer::tile_px() const {
    double dens = 1.0;
    if (in && !in->a_all && in->P * in->C > 0) dens = std::max(0.05, double(in->nnz_a) / double(in->P * in->C));
    // WG walks one 64-channel slice of K at a time: footprint = tile * slice
    int t = int(ET_TILE_BYTES / (4 * std::min(std::max(Kp, 8), KB)) / dens);
    return std::max(8, std::min(t, 4096));
}

i64 ConvLayer::dense_macs() const {
    i64 vr = 0, vs = 0;
    for (int oh = 0; oh < OH; oh++)
        for (int r = 0; r < R; r++) { int ih = oh * sh - pt + r * dh; vr += (ih >= 0 && ih < H); }
    for (int ow = 0; ow < OW; ow++)
        for (int s = 0; s < S; s++) { int iw = ow * sw - pl + s * dw; vs += (iw >= 0 && iw < W); }
    return (i64)N * vr * vs * Cg * K;
}

// ------------------------------------------------------------------ FP

// U independent accumulator sets hide the FMA latency when NV is small (the partial sums are
// added at the end).
template <int NV>
static constexpr int acc_sets() { return NV >= 8 ? 1 : NV >= 4 ? 2 : NV >= 2 ? 4 : 8; }

// acc[u][0..NV) += sum_j xs[j] * row(j)[0..NV), the entries spread over the U sets; the last
// n % U entries of a list whose length is random are one masked step of U entries (value 0,
// row of the last entry) instead of a loop whose exit mispredicts.
template <int NV, int U, class Row>
static inline void walk_rows(vf (&acc)[U][NV], const float* ET_RESTRICT xs, int n, Row row) {
    int j = 0;
    for (; j + U <= n; j += U) {
        ET_UNROLL
        for (int u = 0; u < U; u++) {
            const float x = xs[j + u];
            const vf* w = row(j + u);
            ET_UNROLL
            for (int v = 0; v < NV; v++) acc[u][v] += x * w[v];
        }
    }
    if (j < n) {
        ET_UNROLL
        for (int u = 0; u < U - 1; u++) {
            const int jr = j + u < n ? j + u : n - 1;
            const float x = j + u < n ? xs[jr] : 0.f;
            const vf* w = row(jr);
            ET_UNROLL
            for (int v = 0; v < NV; v++) acc[u][v] += x * w[v];
        }
    }
}

// acc[u][0..NV) += sum_j x[j] * w[(ix[j]-base)*ld .. +NV vectors), the entries spread over the
// U sets. A full list (cnt == width: the chunk is dense) walks the weight rows directly,
// without the index loads.
template <int NV, int U>
static inline void list_acc(vf (&acc)[U][NV], const float* ET_RESTRICT wrs, int ld, const float* ET_RESTRICT xv,
                            const i32* ET_RESTRICT ix, int base, int cnt, int width) {
    int jj = 0;
    if (cnt == width) {
        for (; jj + U <= cnt; jj += U) {
            ET_UNROLL
            for (int u = 0; u < U; u++) {
                const float x = xv[jj + u];
                const vf* w = vptr(wrs + (size_t)(jj + u) * ld);
                ET_UNROLL
                for (int v = 0; v < NV; v++) acc[u][v] += x * w[v];
            }
        }
        for (int u = 0; jj < cnt; jj++, u++) {
            const float x = xv[jj];
            const vf* w = vptr(wrs + (size_t)jj * ld);
            ET_UNROLL
            for (int v = 0; v < NV; v++) acc[u][v] += x * w[v];
        }
        return;
    }
    // the row of entry j is w0 + ix[j] * ld: the base folded into the pointer and the index
    // read unsigned (no subtraction or sign extension per entry: the loop is µop-bound)
    const float* w0 = wrs - (ptrdiff_t)base * ld;
    const size_t lds = (size_t)ld;
    const u32* ux = reinterpret_cast<const u32*>(ix);
    walk_rows(acc, xv, cnt, [=](int j) { return vptr(w0 + ux[j] * lds); });
}

template <int NV, int U>
static inline void acc_zero(vf (&acc)[U][NV]) {
    ET_UNROLL
    for (int u = 0; u < U; u++)
        ET_UNROLL
        for (int v = 0; v < NV; v++) acc[u][v] = vzero();
}

template <int NV, int U>
static inline void acc_reduce_store(vf (&acc)[U][NV], float* z) {
    ET_UNROLL
    for (int u = 1; u < U; u++)
        ET_UNROLL
        for (int v = 0; v < NV; v++) acc[0][v] += acc[u][v];
    ET_UNROLL
    for (int v = 0; v < NV; v++) vptr(z)[v] = acc[0][v];
}

// z[0..NV vectors) += sum_j x[j] * w[(ix[j]-base)*ld ...): one list into partial sums kept in memory.
template <int NV>
static inline void list_fma(float* z, const float* ET_RESTRICT wrs, int ld, const float* ET_RESTRICT xv,
                            const i32* ET_RESTRICT ix, int base, int cnt, int width) {
    constexpr int U = acc_sets<NV>();
    vf acc[U][NV];
    acc_zero(acc);
    ET_UNROLL
    for (int v = 0; v < NV; v++) acc[0][v] = vptr(z)[v];
    list_acc(acc, wrs, ld, xv, ix, base, cnt, width);
    acc_reduce_store(acc, z);
}
namespace {
struct FpArgs {
    const ConvLayer* L;
    const RowView* V;  // the input's lists, one row per (pixel, group)
    const float* vals;
    const i32* reqc;  // constraint |A(p) ∩ group| [P][groups]
    float* ztile;
    int H, W, OH, OW;
    u32* joff;   // joined-list scratch (offsets, values) of this thread
    float* jx;
    i32* rowbuf;  // a decoded row (Cg + 8 entries), for lists derived from state bits
};
}  // namespace

// ---- joined lists
// A pixel's lists over a group of taps are copied into one list of (byte offset of the weight
// row in the group's weight block, value) and walked once with the accumulators in registers.
// A list walk ends in a branch that mispredicts (list lengths are random), and before that
// its accumulator sets must be reduced and stored: per tap, that costs about as much as the
// walk of a half-sparse 32-channel list. Joined, it is paid once per pixel and tap group.
// The copies are whole vectors (fixed trip count, no tail): they read up to one vector past a
// row (every list buffer has that slack, see ABuf) and write past the joined length, which
// the next row overwrites.
#if defined(__GNUC__) || defined(__clang__)
typedef u32 vu __attribute__((vector_size(VW * sizeof(u32))));
static inline vu loadu_u(const void* p) { vu r; std::memcpy(&r, p, sizeof r); return r; }
static inline void storeu_u(void* p, vu v) { std::memcpy(p, &v, sizeof v); }
#endif

// Append one row of n entries (channels ix relative to `base`, values xv): offsets
// (ix - base) * ldb + tapoff. n is rounded up to whole vectors, never to the channel count: a
// short last row of a list sits at its buffer's end, which has one vector of slack and no more.
static inline void join_row(u32* ET_RESTRICT off, float* ET_RESTRICT xs, const i32* ix, const float* xv, int n,
                            int base, u32 ldb, u32 tapoff) {
    const int span = round_up(n, VW);
#if defined(__GNUC__) || defined(__clang__)
    const vu vb = (vu){} + u32(base), vl = (vu){} + ldb, vt = (vu){} + tapoff;
    for (int c = 0; c < span; c += VW) {
        storeu_u(off + c, (loadu_u(ix + c) - vb) * vl + vt);
        storeu(xs + c, loadu(xv + c));
    }
#else
    (void)span;
    for (int c = 0; c < n; c++) {
        off[c] = u32(ix[c] - base) * ldb + tapoff;
        xs[c] = xv[c];
    }
#endif
}

// acc += sum over the joined list of xs[j] * the row at byte offset off[j] of wb.
template <int NV, int U>
static inline void walk_joined(vf (&acc)[U][NV], const char* ET_RESTRICT wb, const u32* ET_RESTRICT off,
                               const float* ET_RESTRICT xs, int n) {
    walk_rows(acc, xs, n, [=](int j) { return reinterpret_cast<const vf*>(wb + off[j]); });
}

// Taps per joined walk: as many as keep the group's weight block (taps * rows * NV vectors)
// within L1.
static constexpr size_t JOIN_BYTES = 40 * 1024;
static inline int join_taps(int RS, int rows, int nv) {
    const size_t per_tap = (size_t)rows * nv * VW * sizeof(float);
    return (int)std::max<size_t>(1, std::min<size_t>((size_t)RS, JOIN_BYTES / std::max<size_t>(per_tap, 1)));
}

// FP of one register block (NV vectors of K at kb) for a tile of output pixels: for each
// group of taps (outer, so that its weights stay in L1 across the tile), each pixel joins its
// input lists over the group's taps and walks them once; partial sums of earlier groups come
// from the (L1) z tile.
template <int NV>
static void fp_joined(const FpArgs& A, i64 o0, i64 o1, int g, int kb, i64& ent, i64& req) {
    constexpr int U = acc_sets<NV>();
    const ConvLayer& L = *A.L;
    const RowView& V = *A.V;
    const int R = L.R, S = L.S, RS = R * S, Cg = L.Cg, Kp = L.Kp, groups = L.groups, KpAll = L.KpAll;
    const int H = A.H, W = A.W, OW = A.OW, OHW = A.OH * A.OW;
    const u32 ldb = u32(Kp * sizeof(float));
    const int tg = join_taps(RS, Cg, NV);
    const float* bb = L.bias.data() + (size_t)g * Kp + kb;
    u32* joff = A.joff;
    float* jx = A.jx;
    i64 e = 0, rq = 0;
    (void)R;
    for (int t0 = 0; t0 < RS; t0 += tg) {
        const int t1 = std::min(RS, t0 + tg);
        const char* wb = reinterpret_cast<const char*>(L.Wf.data() + ((size_t)(g * RS + t0) * Cg) * Kp + kb);
        int n = int(o0 / OHW), oh = int(o0 % OHW) / OW, ow = int(o0 % OHW) % OW;
        for (i64 o = o0; o < o1; o++) {
            int nj = 0;
            for (int t = t0; t < t1; t++) {
                const int r = t / S, s = t - r * S;
                const int ih = oh * L.sh - L.pt + r * L.dh, iw = ow * L.sw - L.pl + s * L.dw;
                if ((unsigned)ih >= (unsigned)H || (unsigned)iw >= (unsigned)W) continue;
                const i64 p = ((i64)n * H + ih) * W + iw;
                rq += A.reqc[p * groups + g];
                const i32* ix;
                i64 off;
                const int cnt = V.row(p, g, ix, off, A.rowbuf);
                join_row(joff + nj, jx + nj, ix, A.vals + off, cnt, g * Cg, ldb, u32(t - t0) * u32(Cg) * ldb);
                nj += cnt;
            }
            float* zr = A.ztile + (size_t)(o - o0) * KpAll + (size_t)g * Kp + kb;
            vf acc[U][NV];
            acc_zero(acc);
            ET_UNROLL
            for (int v = 0; v < NV; v++) acc[0][v] = vptr(t0 == 0 ? bb : zr)[v];
            walk_joined(acc, wb, joff, jx, nj);
            acc_reduce_store(acc, zr);
            e += nj;
            if (++ow == OW) { ow = 0; if (++oh == A.OH) { oh = 0; n++; } }
        }
    }
    ent += e;
    req += rq;
}

// Few input channels (a network's first conv: 3 colours): a pixel's lists over
// all its taps are joined into one list over (tap, channel) - the rows of Wf
// in that order - so one walk of up to R*S*C entries replaces R*S walks of C.
static constexpr int IM2COL_MAX = 64;
template <int NV>
static void fp_im2col(const FpArgs& A, i64 o0, i64 o1, int g, int kb, i64& ent, i64& req) {
    const ConvLayer& L = *A.L;
    const RowView& V = *A.V;
    const int R = L.R, S = L.S, Cg = L.Cg, Kp = L.Kp, KpAll = L.KpAll;
    const int H = A.H, W = A.W, OW = A.OW, OHW = A.OH * A.OW;
    (void)g;
    const float* bb = L.bias.data() + kb;
    const float* wb = L.Wf.data() + kb;
    const float* vals = A.vals;
    i32 ix[IM2COL_MAX];
    float xv[IM2COL_MAX];
    i64 e = 0, rq = 0;
    for (i64 o = o0; o < o1; o++) {
        const int n = int(o / OHW), rem = int(o - (i64)n * OHW), oh = rem / OW, ow = rem - oh * OW;
        int cnt = 0;
        const int ih0 = oh * L.sh - L.pt, iw0 = ow * L.sw - L.pl;
        if (V.all && L.dw == 1 && ih0 >= 0 && ih0 + (R - 1) * L.dh < H && iw0 >= 0 && iw0 + S - 1 < W) {
            // dense input, every tap inside: each kernel row is S*C contiguous floats
            for (int r = 0; r < R; r++) {
                const i64 p = ((i64)n * H + ih0 + r * L.dh) * W + iw0;
                for (int s = 0; s < S; s++) rq += A.reqc[p + s];
                std::memcpy(xv + r * S * Cg, vals + p * Cg, sizeof(float) * S * Cg);
            }
            cnt = R * S * Cg;
        } else {
            L.each_tap(n, oh, ow, [&](int r, int s, i64 p) {
                rq += A.reqc[p];
                const i32* pix;
                i64 off;
                const int c = V.row(p, 0, pix, off, A.rowbuf);
                const int tb = (r * S + s) * Cg;
                for (int j = 0; j < c; j++) {
                    ix[cnt] = tb + pix[j];
                    xv[cnt++] = vals[off + j];
                }
            });
        }
        float* zr = A.ztile + (size_t)(o - o0) * KpAll + kb;
        ET_UNROLL
        for (int v = 0; v < NV; v++) vptr(zr)[v] = vptr(bb)[v];
        // every tap valid and dense: ix is 0..cnt-1 and the walk needs no indices
        if (cnt) list_fma<NV>(zr, wb, Kp, xv, ix, 0, cnt, R * S * Cg);
        e += cnt;
    }
    ent += e;
    req += rq;
}

using FpFn = void (*)(const FpArgs&, i64, i64, int, int, i64&, i64&);
static const FpFn fp_table[9] = {nullptr, fp_joined<1>, fp_joined<2>, fp_joined<3>, fp_joined<4>,
                                 fp_joined<5>, fp_joined<6>, fp_joined<7>, fp_joined<8>};
static const FpFn fp_im2col_table[9] = {nullptr, fp_im2col<1>, fp_im2col<2>, fp_im2col<3>, fp_im2col<4>,
                                        fp_im2col<5>, fp_im2col<6>, fp_im2col<7>, fp_im2col<8>};

void ConvLayer::fp_general(const InfoPtr& x, Epi& E) {
    const bool im2col = groups == 1 && R * S > 1 && R * S * Cg <= IM2COL_MAX;
    RowView V = x->view_a(groups);
    ABuf<i32> decoded;
    materialize(V, decoded);
    const float* vals = x->a_values();  // a along the A lists (recomputed for hard-swish)
    const i32* reqc = x->group_counts(0, groups);
    const i64 Pout = (i64)N * OH * OW;
    const int T = max_threads();
    const FpFn* kernels = im2col ? fp_im2col_table : fp_table;
    // same-size convs on listed input: split the output pixels by the work
    // their input lists carry (non-zeros plus a per-pixel share), not evenly
    std::vector<i64> bounds;
    if (!V.all && Pout == x->P && T > 1) {
        std::vector<i64> pre(Pout + 1, 0);
        const i32* ac = x->acnt.data();
        for (i64 o = 0; o < Pout; o++) pre[o + 1] = pre[o] + ac[o] + C / 4 + 1;
        bounds = balanced_split(pre.data(), Pout, T);
    }
    const size_t jcap = (size_t)R * S * round_up(Cg, VW) + VW;
    std::vector<Counts> cnt(T);
#pragma omp parallel num_threads(T)
    {
        const int t = thread_id(), nt = team_size();
        const bool bal = (int)bounds.size() == nt + 1;
        const i64 p0 = bal ? bounds[t] : split(Pout, nt, t), p1 = bal ? bounds[t + 1] : split(Pout, nt, t + 1);
        E.start(t, p0, p1);
        ABuf<float> ztile, zrow, jx;
        ABuf<u32> joff;
        ABuf<i32> rowbuf;
        ztile.reset((size_t)TPIX * KpAll);
        zrow.reset((size_t)K + VW);
        joff.reset(jcap);
        jx.reset(jcap);
        rowbuf.reset((size_t)C + 16);
        FpArgs A{this, &V, vals, reqc, ztile.data(), H, W, OH, OW, joff.data(), jx.data(), rowbuf.data()};
        i64 ex = 0, rq = 0;
        for (i64 tp = p0; tp < p1; tp += TPIX) {
            const i64 te = std::min(p1, tp + TPIX);
            for (int g = 0; g < groups; g++)
                for (int kb = 0; kb < Kp; kb += KB) {
                    const int nv = std::min(KB, Kp - kb) / VW;
                    i64 ent = 0, req = 0;
                    kernels[nv](A, tp, te, g, kb, ent, req);
                    ex += ent * nv * VW;
                    if (kb == 0) rq += req * Kg;
                }
            for (i64 o = tp; o < te; o++) {
                const float* zr = ztile.data() + (o - tp) * KpAll;
                if (groups > 1) {
                    for (int g = 0; g < groups; g++)
                        std::memcpy(zrow.data() + g * Kg, zr + g * Kp, sizeof(float) * Kg);
                    zr = zrow.data();
                }
                E.row(t, o, zr);
            }
        }
        cnt[t].executed = ex;
        cnt[t].required = rq;
    }
    cfp = Counts();
    for (auto& c : cnt) cfp += c;
}

// z[0..C) = bias + sum over the taps of x[tp[i]] * w[i], 32 channels at a time in
// registers (the taps are the inner loop, so z is written once per pixel).
static void dw_block(float* ET_RESTRICT z, const float* bias, const float* X, int C, const i64* tp,
                     const float* const* tw, int taps) {
    int c0 = 0;
    for (; c0 + 4 * VW <= C; c0 += 4 * VW) {
        vf acc[4];
        ET_UNROLL
        for (int v = 0; v < 4; v++) acc[v] = loadu(bias + c0 + v * VW);
        for (int i = 0; i < taps; i++) {
            const float* xr = X + tp[i] * C + c0;
            const float* wr = tw[i] + c0;
            ET_UNROLL
            for (int v = 0; v < 4; v++) acc[v] += loadu(xr + v * VW) * loadu(wr + v * VW);
        }
        ET_UNROLL
        for (int v = 0; v < 4; v++) storeu(z + c0 + v * VW, acc[v]);
    }
    for (int c = c0; c < C; c++) {
        float a = bias[c];
        for (int i = 0; i < taps; i++) a += X[tp[i] * C + c] * tw[i][c];
        z[c] = a;
    }
}

void ConvLayer::fp_depthwise(const InfoPtr& x, Epi& E) {
    const float* X = x_dense ? x_dense : x->dense_values();
    const bool skip = !x->all;  // sparse mode skips all-zero input pixels
    const i32* ac = x->acnt.data();
    const int Cpad = round_up(C, VW);
    const i64 Pout = (i64)N * OH * OW;
    const int T = max_threads();
    std::vector<Counts> cnt(T);
    const int OHW = OH * OW;
#pragma omp parallel num_threads(T)
    {
        const int t = thread_id(), nt = team_size();
        const i64 p0 = split(Pout, nt, t), p1 = split(Pout, nt, t + 1);
        E.start(t, p0, p1);
        ABuf<float> zrow;
        zrow.reset(Cpad);
        i64 ex = 0, rq = 0;
        // (n, oh, ow) stepped along, not divided out per pixel
        int n = int(p0 / OHW), oh = int(p0 % OHW) / OW, ow = int(p0 % OHW) % OW;
        for (i64 o = p0; o < p1; o++) {
            float* ET_RESTRICT z = zrow.data();
            int taps = 0;
            i64 tp[32];
            const float* tw[32];
            each_tap(n, oh, ow, [&](int r, int s, i64 p) {
                rq += ac[p];
                if (skip && ac[p] == 0) return;
                ex += C;
                const float* wr = Wf.data() + (size_t)(r * S + s) * Cpad;
                if (taps < 32) {
                    tp[taps] = p;
                    tw[taps++] = wr;
                    return;
                }
                const float* ET_RESTRICT xr = X + p * C;  // kernels larger than 32 taps
                if (taps == 32) { dw_block(z, bias.data(), X, C, tp, tw, taps); taps = 33; }
                for (int c = 0; c < C; c++) z[c] += xr[c] * wr[c];
            });
            if (taps <= 32) dw_block(z, bias.data(), X, C, tp, tw, taps);
            E.row(t, o, z);
            if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }
        }
        cnt[t].executed = ex;
        cnt[t].required = rq;
    }
    cfp = Counts();
    for (auto& c : cnt) cfp += c;
}

InfoPtr ConvLayer::forward(const InfoPtr& x0, bool dense_, float* a_out, bool out_dense, bool keep_values) {
    if (!has_w) throw std::runtime_error("conv: set_weights must be called before forward");
    const double t0 = now_ms();
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
    E.begin(o.get(), a_out, max_threads());
    if (depthwise) fp_depthwise(x, E);
    else fp_general(x, E);
    E.finish();
    cfp.dense = dense_macs();
    tfp += cfp;
    out = o;
    ms_fp = now_ms() - t0;
    return o;
}

// ------------------------------------------------------------------ BP / WG
namespace {
struct BpArgs {
    const ConvLayer* L;
    const RowView* GV;
    const float* dvals;
    const i32* gc;  // [Pout][groups] constraint |G|
    float* btile;   // [TPIX][groups*Cp]
    int H, W, OH, OW;
    u32* joff = nullptr;  // joined-list scratch (offsets, values) of this thread
    float* jx = nullptr;
    i32* rowbuf = nullptr;  // a decoded row (Kg + 8 entries), for lists derived from state bits
};
}  // namespace

// BP of one register block (NV vectors of C at cb) for a tile of input pixels, the error d
// in the sparse broadcast role: for each group of taps (outer: its W^T rows stay in L1), each
// pixel joins the G lists of the output pixels its taps reach and walks them once.
template <int NV>
static void bp_joined(const BpArgs& A, const i64* px, int np, int g, int cb, i64& ent, i64* tapreq) {
    constexpr int U = acc_sets<NV>();
    const ConvLayer& L = *A.L;
    const RowView& GV = *A.GV;
    const int S = L.S, RS = L.R * L.S, Kg = L.Kg, Cp = L.Cp, groups = L.groups;
    const int H = A.H, W = A.W, OH = A.OH, OW = A.OW, HW = H * W;
    const int CpAll = groups * Cp;
    const u32 ldb = u32(Cp * sizeof(float));
    const int tg = join_taps(RS, Kg, NV);
    u32* joff = A.joff;
    float* jx = A.jx;
    if (tapreq)
        for (int i = 0; i < np; i++) tapreq[i] = 0;
    i64 e = 0;
    for (int t0 = 0; t0 < RS; t0 += tg) {
        const int t1 = std::min(RS, t0 + tg);
        const char* wb = reinterpret_cast<const char*>(L.Wb.data() + ((size_t)(g * RS + t0) * Kg) * Cp + cb);
        for (int i = 0; i < np; i++) {
            const i64 p = px[i];
            const int n = int(p / HW), rem = int(p - (i64)n * HW), ih = rem / W + L.pt, iw = rem % W + L.pl;
            int nj = 0;
            for (int t = t0; t < t1; t++) {
                const int r = t / S, s = t - r * S;
                int th = ih - r * L.dh, tw = iw - s * L.dw;
                if (th < 0 || tw < 0) continue;
                if (L.sh == 2) { if (th & 1) continue; th >>= 1; }  // common stride: no division
                else if (L.sh != 1) { if (th % L.sh) continue; th /= L.sh; }
                if (L.sw == 2) { if (tw & 1) continue; tw >>= 1; }
                else if (L.sw != 1) { if (tw % L.sw) continue; tw /= L.sw; }
                if (th >= OH || tw >= OW) continue;
                const i64 o = ((i64)n * OH + th) * OW + tw;
                if (tapreq) tapreq[i] += A.gc[o * groups + g];
                const i32* ix;
                i64 off;
                const int cnt = GV.row(o, g, ix, off, A.rowbuf);
                join_row(joff + nj, jx + nj, ix, A.dvals + off, cnt, g * Kg, ldb, u32(t - t0) * u32(Kg) * ldb);
                nj += cnt;
            }
            float* br = A.btile + (size_t)i * CpAll + (size_t)g * Cp + cb;
            vf acc[U][NV];
            acc_zero(acc);
            if (t0 > 0) {
                ET_UNROLL
                for (int v = 0; v < NV; v++) acc[0][v] = vptr(br)[v];
            }
            walk_joined(acc, wb, joff, jx, nj);
            acc_reduce_store(acc, br);
            e += nj;
        }
    }
    ent += e;
}

using BpFn = void (*)(const BpArgs&, const i64*, int, int, int, i64&, i64*);
static const BpFn bp_table[9] = {nullptr, bp_joined<1>, bp_joined<2>, bp_joined<3>, bp_joined<4>,
                                 bp_joined<5>, bp_joined<6>, bp_joined<7>, bp_joined<8>};

namespace {
struct WgArgs {
    const ConvLayer* L;
    const Transposed* T;
    const float* D;  // [Pout][KpAll]
    const float* Dzero;  // a row of zeros (D's row Pout)
    const i32* gc;   // [Pout][groups]
    float* dWp;      // [g][RS][Cg][Kp]
    int OH, OW;
    bool a_constrained;
    bool checkg;  // skip output pixels whose G (in this group) is empty
};
}  // namespace

// WG sums a (channel, tap) row over up to thousands of pixels: partial sums of WG_CHUNK
// entries are folded into a second accumulator, so rounding grows like sqrt(chunk) +
// sqrt(entries / chunk) ulps instead of sqrt(entries).
static constexpr int WG_CHUNK = 128;
template <int NV>
static inline void wg_spill(vf* acc, vf* part) {
    ET_UNROLL
    for (int i = 0; i < NV; i++) {
        part[i] += acc[i];
        acc[i] = vzero();
    }
}

template <int NV, bool PW, bool S1, bool S2 = false>
static void wg_block(const WgArgs& A, i64 tile, int c, int rs, int kb, i64& ent, i64& req) {
    const ConvLayer& L = *A.L;
    const Transposed& T = *A.T;
    const int C = L.C, Cg = L.Cg, Kp = L.Kp, groups = L.groups, RS = L.R * L.S;
    const int g = c / Cg, cl = c - g * Cg;
    const int r = rs / L.S, s = rs - r * L.S;
    const int offh = L.pt - r * L.dh, offw = L.pl - s * L.dw;
    const int OH = A.OH, OW = A.OW;
    const i64 e0 = T.ptr[tile * C + c], e1 = T.ptr[tile * C + c + 1];
    const i64 obase = PW ? 0 : (i64)T.tn[tile] * OH * OW;
    const float* Dg = A.D + g * Kp + kb;
    const i32* pix = T.pix.data();
    const float* val = T.val.data();
    const i32* gc = A.gc;
    vf acc[NV], part[NV];
    ET_UNROLL
    for (int i = 0; i < NV; i++) acc[i] = part[i] = vzero();
    i64 en = 0;
    for (i64 e = e0; e < e1; e++) {
        i64 o;
        const int code = pix[e];
        if (PW) {
            o = code;
        } else {
            int th = (code >> 16) + offh, tw = (code & 0xffff) + offw;
            if (S1) {
                if ((unsigned)th >= (unsigned)OH || (unsigned)tw >= (unsigned)OW) continue;
            } else if (S2) {  // stride 2: parity test and shift instead of % and /
                if (((th | tw) & 1) || th < 0 || tw < 0) continue;
                th >>= 1;
                tw >>= 1;
                if (th >= OH || tw >= OW) continue;
            } else {
                if (th < 0 || tw < 0 || th % L.sh || tw % L.sw) continue;
                th /= L.sh;
                tw /= L.sw;
                if (th >= OH || tw >= OW) continue;
            }
            o = obase + (i64)th * OW + tw;
        }
        if (A.checkg && gc[o * groups + g] == 0) continue;  // d row entirely outside G
        const float v = val[e];
        en++;
        const vf* dr = vptr(Dg + o * L.KpAll);
        ET_UNROLL
        for (int i = 0; i < NV; i++) acc[i] += v * dr[i];
        if ((en & (WG_CHUNK - 1)) == 0) wg_spill<NV>(acc, part);
    }
    float* row = A.dWp + (((size_t)g * RS + rs) * Cg + cl) * Kp + kb;
    ET_UNROLL
    for (int i = 0; i < NV; i++) vptr(row)[i] += part[i] + acc[i];
    ent += en;
    (void)req;
}

// Stride-1 variant on geometry-aware lists: validity is one bit test and the
// output pixel is q + a per-tap constant. One walk of a channel's list serves a
// group of taps (geo_taps<NV>() of them): each entry's value is broadcast once and
// multiplied into the d rows of every tap of the group, each tap with its own
// accumulators, so TG*NV independent FMA chains hide the FMA latency and the
// list (codes and values) is read once per group instead of once per tap.
// Taps outside the image at this pixel multiply zero into a valid row (row 0):
// no branch to mispredict at the borders.
#if defined(__AVX512F__) || defined(__aarch64__)
static constexpr int ACC_REGS = 24;  // 32 vector registers
#else
static constexpr int ACC_REGS = 12;  // 16 vector registers
#endif
// taps per walk: all 9 of a 3x3 kernel, else a row of 3, else one, as the accumulators fit
template <int NV>
static constexpr int geo_taps() { return 9 * NV <= ACC_REGS ? 9 : 3 * NV <= ACC_REGS ? 3 : 1; }

template <int NV>
static inline void spill_to(vf* acc, float* part, bool first) {
    ET_UNROLL
    for (int i = 0; i < NV; i++) {
        vptr(part)[i] = first ? acc[i] : vptr(part)[i] + acc[i];
        acc[i] = vzero();
    }
}

template <int NV, bool CHECKG>
static void wg_block_geo(const WgArgs& A, i64 tile, int c, int rs0, int kb, i64& ent, i64& req) {
    constexpr int TG = geo_taps<NV>();
    const ConvLayer& L = *A.L;
    const Transposed& T = *A.T;
    const int C = L.C, Cg = L.Cg, Kp = L.Kp, KpAll = L.KpAll, groups = L.groups, RS = L.R * L.S;
    const int g = c / Cg, cl = c - g * Cg;
    const int nt = std::min(TG, RS - rs0);
    const i64 e0 = T.ptr[tile * C + c], e1 = T.ptr[tile * C + c + 1];
    const i64 base = (i64)T.tn[tile] * A.OH * A.OW;
    // per tap: where its d rows start (row q of the tap is tb[t] + q * KpAll); taps past the
    // kernel (RS not a multiple of TG) read the zero row with their bit never set
    const float* tb[TG];
    i64 tdelta[TG];
    for (int t = 0; t < TG; t++) {
        const int rs = rs0 + std::min(t, nt - 1), r = rs / L.S, s = rs - r * L.S;
        tdelta[t] = base + (i64)(L.pt - r * L.dh) * A.OW + (L.pl - s * L.dw);
        tb[t] = A.D + g * Kp + kb + tdelta[t] * KpAll;
    }
    const float* zrow = A.Dzero + g * Kp + kb;
    const i32* ET_RESTRICT pix = T.pix.data();
    const float* ET_RESTRICT val = T.val.data();
    const i32* gc = A.gc;
    const u32 live = (nt >= 32 ? ~0u : ((1u << nt) - 1u)) << rs0;  // this group's tap bits
    vf acc[TG][NV];
    alignas(64) float part[TG][NV * VW];  // written at the first spill: most lists never spill
    ET_UNROLL
    for (int t = 0; t < TG; t++)
        ET_UNROLL
        for (int i = 0; i < NV; i++) acc[t][i] = vzero();
    i64 en = 0, since = 0;
    int spills = 0;
    for (i64 e = e0; e < e1; e++) {
        const u32 code = u32(pix[e]);
        const u32 bits = (code & live) >> rs0;
        if (!bits) continue;
        const i64 q = i64(code >> RS);
        const i64 qo = q * KpAll;
        const float v = val[e];
        ET_UNROLL
        for (int t = 0; t < TG; t++) {
            // a tap outside the image at this pixel reads the zero row: no branch to mispredict
            bool ok = (bits >> t) & 1u;
            if (CHECKG && ok) ok = gc[(tdelta[t] + q) * groups + g] != 0;  // d row entirely outside G
            en += ok;
            const vf* dr = vptr(ok ? tb[t] + qo : zrow);
            ET_UNROLL
            for (int i = 0; i < NV; i++) acc[t][i] += v * dr[i];
        }
        if (++since == WG_CHUNK) {
            since = 0;
            ET_UNROLL
            for (int t = 0; t < TG; t++) spill_to<NV>(acc[t], part[t], spills == 0);
            spills++;
        }
    }
    for (int t = 0; t < nt; t++) {
        float* row = A.dWp + (((size_t)g * RS + rs0 + t) * Cg + cl) * Kp + kb;
        ET_UNROLL
        for (int i = 0; i < NV; i++) vptr(row)[i] += spills ? vptr(part[t])[i] + acc[t][i] : acc[t][i];
    }
    ent += en;
    (void)req;
}

// Taps per call of a WG variant at NV vectors: a group for the geo variants, one otherwise.
static int wg_taps_per_call(int var, int nv) {
    if (var != 3 && var != 4) return 1;  // WG_GEO, WG_GEO_CHECKG
    static const int tg[9] = {1, geo_taps<1>(), geo_taps<2>(), geo_taps<3>(), geo_taps<4>(),
                              geo_taps<5>(), geo_taps<6>(), geo_taps<7>(), geo_taps<8>()};
    return tg[nv];
}

using WgFn = void (*)(const WgArgs&, i64, int, int, int, i64&, i64&);
#define ET_WG_ROW(PW, S1)                                                                              \
    {nullptr, wg_block<1, PW, S1>, wg_block<2, PW, S1>, wg_block<3, PW, S1>, wg_block<4, PW, S1>,    \
     wg_block<5, PW, S1>, wg_block<6, PW, S1>, wg_block<7, PW, S1>, wg_block<8, PW, S1>}
#define ET_WG_GEO(CG)                                                                                 \
    {nullptr, wg_block_geo<1, CG>, wg_block_geo<2, CG>, wg_block_geo<3, CG>, wg_block_geo<4, CG>,        \
     wg_block_geo<5, CG>, wg_block_geo<6, CG>, wg_block_geo<7, CG>, wg_block_geo<8, CG>}
#define ET_WG_S2                                                                                        \
    {nullptr, wg_block<1, false, false, true>, wg_block<2, false, false, true>, wg_block<3, false, false, true>, \
     wg_block<4, false, false, true>, wg_block<5, false, false, true>, wg_block<6, false, false, true>,         \
     wg_block<7, false, false, true>, wg_block<8, false, false, true>}
// WG variants (rows of wg_table): how a list entry's output pixel is found from its input pixel
enum WgVariant { WG_GENERAL = 0, WG_STRIDE1, WG_POINTWISE, WG_GEO, WG_GEO_CHECKG, WG_STRIDE2, WG_VARIANTS };
static const WgFn wg_table[WG_VARIANTS][9] = {ET_WG_ROW(false, false), ET_WG_ROW(false, true), ET_WG_ROW(true, true),
                                              ET_WG_GEO(false), ET_WG_GEO(true), ET_WG_S2};

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

// d = grad_a * f'(z): dense padded rows into D (for WG; null: skipped), the values along the G
// lists into dvals (for BP; null: skipped), per-channel sums into db (null: skipped).
void ConvLayer::grad_prologue(const float* grad_a, const RowView& GV, float* D, float* dvals, float* db) {
    ActInfo& O = *out;
    const i64 Pout = O.P;
    const int T = max_threads();
    const bool need_wg = D != nullptr, need_bp = dvals != nullptr;
    std::vector<std::vector<double>> dbp(T);
    const i64* gptr = GV.all ? nullptr : GV.ptr;
    const i32* gidx = GV.all ? nullptr : GV.idx;
    const bool hs = O.act == ACT_HSWISH;
    const bool g1 = groups == 1;
#pragma omp parallel num_threads(T)
    {
        const int t = thread_id(), nt = team_size();
        std::vector<float> fp(K), drow(K);
        std::vector<i32> gbuf((size_t)K + 8);  // a G row decoded from the state bits (derived lists)
        std::vector<double>& dbl = dbp[t];
        dbl.assign(K, 0.0);
        // ReLU / ReLU6 with K % 8 == 0 (ungrouped, so D rows are unpadded): eight channels at a time
        const bool fast = g1 && Kp == K &&
                          grad_rows_fast(O, grad_a, split(Pout, nt, t), split(Pout, nt, t + 1),
                                         need_wg ? D : nullptr, KpAll, need_bp ? dvals : nullptr, dbl.data());
#pragma omp for schedule(static)
        for (i64 o = 0; o < (fast ? 0 : Pout); o++) {
            const float* ga = grad_a + o * K;
            float* Dr = need_wg ? D + o * KpAll : nullptr;
            if (gptr) {
                // sparse: d is computed only along the G list (f' = 1 there except the curved hard-swish part)
                if (Dr) std::memset(Dr, 0, sizeof(float) * KpAll);
                // hard-swish: G ⊇ A; the stored value of a curved element is z,
                // a curved element outside A has z == 0 (up to underflow): f' = 1/2
                i64 ja = hs ? O.a_ptr[o] : 0;
                const i64 jae = hs ? O.a_ptr[o + 1] : 0;
                const i32* grow = gidx ? gidx + gptr[o] : gbuf.data();
                if (!gidx) decode_row(O, GV.which, o, 0, K, gbuf.data());
                for (i64 j = gptr[o]; j < gptr[o + 1]; j++) {
                    const int k = grow[j - gptr[o]];
                    float d = ga[k];
                    if (hs) {
                        const bool inA = ja < jae && O.a_idx[ja] == k;
                        if (O.state(o * K + k) == 1) {
                            const float f = (inA ? O.vals[ja] : 0.f) / 3.f + 0.5f;
                            d = f != 0.f ? d * f : 0.f;
                        }
                        if (inA) ja++;
                    }
                    if (need_bp) dvals[j] = d;
                    if (Dr) Dr[g1 ? k : (k / Kg) * Kp + k % Kg] = d;  // no division when ungrouped
                    dbl[k] += d;
                }
            } else {
                fprime_row(O, o, fp.data());
                for (int k = 0; k < K; k++) {
                    const float d = fp[k] != 0.f ? ga[k] * fp[k] : 0.f;
                    drow[k] = d;
                    dbl[k] += d;
                }
                if (Dr)
                    for (int g = 0; g < groups; g++) {
                        std::memcpy(Dr + g * Kp, drow.data() + g * Kg, sizeof(float) * Kg);
                        for (int kk = Kg; kk < Kp; kk++) Dr[g * Kp + kk] = 0.f;
                    }
                if (need_bp) std::memcpy(dvals + o * K, drow.data(), sizeof(float) * K);
            }
        }
    }
    if (db) sum_threads(dbp, db, K);
}

// BP: g_in = W^T d over the taps, then masked by the previous layer's G (prevG; null: no mask).
void ConvLayer::bp_phase(const RowView& GV, const float* dvals, const i32* gc, float* g_in, const ActInfo* prevG) {
    const i64 Pin = in->P;
    const int T = max_threads();
    cbp.dense = dense_macs();
    // mask of the input gradient by the previous layer's G
    int mmode = 0;  // 0 none, 1 lists, 2 states
    RowView PV;
    const i32* pgc = nullptr;
    ActInfo* pg = const_cast<ActInfo*>(prevG);
    if (pg && (pg->kind == KD_RELU || pg->kind == KD_CLIP0 || pg->kind == KD_HSWISH)) {
        mmode = pg->g_all ? 2 : 1;
        if (mmode == 1) PV = pg->view_g(1);
        pgc = pg->group_counts(1, groups);
    }
    const bool skip_px = mmode == 1 && !dense;
    BpArgs A{this, &GV, dvals, gc, nullptr, H, W, OH, OW};
    const int CpAll = groups * Cp;
    std::vector<Counts> cnt(T);
#pragma omp parallel num_threads(T)
    {
        const int t = thread_id(), nt = team_size();
        const i64 p0 = split(Pin, nt, t), p1 = split(Pin, nt, t + 1);
        ABuf<float> bt, jx;
        ABuf<u32> joff;
        bt.reset((size_t)TPIX * CpAll);
        const size_t jcap = (size_t)R * S * round_up(Kg, VW) + VW;
        joff.reset(jcap);
        jx.reset(jcap);
        ABuf<i32> rowbuf;
        rowbuf.reset((size_t)std::max(C, K) + 16);
        BpArgs B = A;
        B.btile = bt.data();
        B.joff = joff.data();
        B.jx = jx.data();
        B.rowbuf = rowbuf.data();
        i64 px[TPIX], tr[TPIX];
        i64 ex = 0, rq = 0;
        for (i64 tp = p0; tp < p1;) {
            int np = 0;
            for (; tp < p1 && np < TPIX; tp++) {
                if (skip_px && pg->gcnt[tp] == 0) {
                    std::memset(g_in + tp * C, 0, sizeof(float) * C);
                    continue;
                }
                px[np++] = tp;
            }
            if (!np) continue;
            for (int g = 0; g < groups; g++)
                for (int cb = 0; cb < Cp; cb += KB) {
                    const int nv = std::min(KB, Cp - cb) / VW;
                    i64 ent = 0;
                    bp_table[nv](B, px, np, g, cb, ent, cb == 0 ? tr : nullptr);
                    ex += ent * nv * VW;
                    if (cb == 0)
                        for (int ii = 0; ii < np; ii++)
                            rq += tr[ii] * (pgc ? pgc[px[ii] * groups + g] : Cg);
                }
            for (int ii = 0; ii < np; ii++) {
                const i64 p = px[ii];
                const float* b = bt.data() + (size_t)ii * CpAll;
                float* gr = g_in + p * C;
                if (mmode == 1) {
                    std::memset(gr, 0, sizeof(float) * C);
                    const i32* ix;
                    i64 off;
                    const int n = PV.row(p, 0, ix, off, rowbuf.data());
                    for (int j = 0; j < n; j++) {
                        const int c = ix[j];
                        gr[c] = b[(c / Cg) * Cp + c % Cg];
                    }
                } else {
                    for (int g = 0; g < groups; g++)
                        std::memcpy(gr + g * Cg, b + g * Cp, sizeof(float) * Cg);
                    if (mmode == 2 && C % 8 == 0) {  // G of eight channels per lookup
                        for (int c = 0; c < C; c += 8) {
                            const unsigned m = g_bits8(*pg, p * C + c);
                            for (int l = 0; l < 8; l++) gr[c + l] = (m >> l & 1) ? gr[c + l] : 0.f;
                        }
                    } else if (mmode == 2) {
                        for (int c = 0; c < C; c++)
                            if (!pg->in_g_state(pg->state(p * C + c))) gr[c] = 0.f;
                    }
                }
            }
        }
        cnt[t].executed = ex;
        cnt[t].required = rq;
    }
    for (auto& c : cnt) { cbp.executed += c.executed; cbp.required += c.required; }
}

// WG: dW = sum over the pixels of a (input lists, transposed per tile) times d (dense rows D).
void ConvLayer::wg_phase(const float* D, const i32* gc, float* dW) {
    const i64 Pout = out->P;
    const int T = max_threads();
    cwg.dense = dense_macs();
    const int RS = R * S;
    const i64 items = (i64)C * RS;
    std::vector<i64> pre(items + 1, 0);
    for (i64 it = 0; it < items; it++)
        pre[it + 1] = pre[it] + (in->a_all ? 1 : in->chan_nnz[it / RS] + 1);
    ABuf<float> dWp;
    dWp.reset((size_t)groups * RS * Cg * Kp);
    {
        float* z = dWp.data();
        const i64 nz = (i64)groups * RS * Cg * Kp;
#pragma omp parallel for schedule(static)
        for (i64 i = 0; i < nz; i += 4096) std::memset(z + i, 0, sizeof(float) * std::min<i64>(4096, nz - i));
    }
    if (wg_by_im2col()) {
        cwg.executed = wg_im2col(D, dWp.data());
    } else {
    TGeo Gg;
    const bool hg = wg_geo(Gg);
    const std::unique_ptr<Transposed> Tptr = in->transposed(pointwise, tile_px(), hg ? &Gg : nullptr);
    const Transposed& TT = *Tptr;
    bool any_empty = false;
    if (!dense)
        for (i64 i = 0; i < Pout * groups && !any_empty; i++) any_empty = gc[i] == 0;
    WgArgs A{this, &TT, D, D + Pout * KpAll, gc, dWp.data(), OH, OW, in->a_constrained, any_empty};
    const int var = hg ? (any_empty ? 4 : 3)
                    : pointwise ? 2
                    : (sh == 1 && sw == 1) ? 1
                    : (sh == 2 && sw == 2) ? 5 : 0;
    // work items: (channel, tap), split by the channels' list lengths; the geo variants walk
    // one channel's list for a group of taps, so their items are whole channels
    const bool grouped = var == 3 || var == 4;
    std::vector<i64> chpre;
    if (grouped) {
        chpre.assign(C + 1, 0);
        for (int c = 0; c < C; c++) chpre[c + 1] = pre[(i64)(c + 1) * RS];
    }
    std::vector<Counts> cnt(T);
#pragma omp parallel num_threads(T)
    {
        const int t = thread_id(), nt = team_size();
        std::vector<i64> b = grouped ? balanced_split(chpre.data(), C, nt) : balanced_split(pre.data(), items, nt);
        const i64 i0 = grouped ? b[t] * RS : b[t], i1 = grouped ? b[t + 1] * RS : b[t + 1];
        i64 ex = 0;
        for (i64 tile = 0; tile < TT.ntiles; tile++)
            for (int kb = 0; kb < Kp; kb += KB) {  // one K slice of the tile's d rows stays in L1
                const int nv = std::min(KB, Kp - kb) / VW;
                const int step = wg_taps_per_call(var, nv);
                for (i64 it = i0; it < i1; it++) {
                    const int c = int(it / RS), rs = int(it % RS);
                    if (rs % step) continue;
                    if (TT.ptr[tile * C + c] == TT.ptr[tile * C + c + 1]) continue;
                    i64 ent = 0, req = 0;
                    wg_table[var][nv](A, tile, c, rs, kb, ent, req);
                    (void)req;
                    ex += ent * nv * VW;
                }
            }
        cnt[t].executed = ex;
    }
    for (auto& c : cnt) cwg.executed += c.executed;
    }
    cwg.required = wg_required(gc);
    store_dw(dWp.data(), dW);
}

// packed [g][rs][cl][kk] -> OIHW, blocked transpose in parallel
void ConvLayer::store_dw(const float* src, float* dW) const {
    const int RS = R * S;
    constexpr int TB = 64;
    const int nkb = (Kg + TB - 1) / TB, ncb = (Cg + TB - 1) / TB;
    const i64 nblk = (i64)groups * nkb * ncb;
#pragma omp parallel for schedule(static)
    for (i64 bi = 0; bi < nblk; bi++) {
        const int cbk = int(bi % ncb), kbk = int((bi / ncb) % nkb), g = int(bi / ncb / nkb);
        const int k0 = kbk * TB, k1 = std::min(Kg, k0 + TB), c0 = cbk * TB, c1 = std::min(Cg, c0 + TB);
        for (int kk = k0; kk < k1; kk++)
            for (int cl = c0; cl < c1; cl++)
                for (int rs = 0; rs < RS; rs++)
                    dW[(((size_t)(g * Kg + kk)) * Cg + cl) * RS + rs] =
                        src[(((size_t)g * RS + rs) * Cg + cl) * Kp + kk];
    }
}

void ConvLayer::bwd_general(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db) {
    const double t0 = now_ms();
    ActInfo& O = *out;
    const i64 Pout = O.P;
    const bool need_wg = dW != nullptr;
    const bool need_bp = g_in != nullptr;
    RowView GV = O.view_g(groups);
    ABuf<i32> decoded;
    materialize(GV, decoded);
    const i64 nd = GV.all ? Pout * K : (O.g_same ? O.nnz_a : O.nnz_g);
    // scratch of this call only (the block recycler hands the same memory to the next layer)
    ABuf<float> Dbuf, dvbuf;
    if (need_wg) {
        Dbuf.reset((size_t)(Pout + 1) * KpAll);  // + a zero row: WG's taps outside the image read it
        std::memset(Dbuf.data() + Pout * KpAll, 0, sizeof(float) * KpAll);
    }
    if (need_bp) dvbuf.reset((size_t)std::max<i64>(nd, 1) + 8);  // + slack: whole 8-lane stores
    grad_prologue(grad_a, GV, need_wg ? Dbuf.data() : nullptr, need_bp ? dvbuf.data() : nullptr, db);
    const i32* gc = O.group_counts(1, groups);
    cbp = Counts();
    cwg = Counts();
    const double t1 = now_ms();
    if (need_bp) bp_phase(GV, dvbuf.data(), gc, g_in, prevG);
    decoded.clear();  // WG reads D and the input's lists, not G: its peak need not hold these
    dvbuf.clear();
    const double t2 = now_ms();
    if (need_wg) wg_phase(Dbuf.data(), gc, dW);
    phase_times(t0, t1, t2, now_ms(), need_bp);
}

// WG of a first conv (few channels, dense input): dW rows (tap, channel) x K
// accumulate outer products of the joined input taps (im2col rows of a tile of
// output pixels) and the d rows; B rows x NV vectors stay in registers while a
// tile is swept, so each d vector loaded feeds B FMAs.
template <int NV>
static void wg_cols(float* acc, const float* col, const i64* to, int nt, const float* D, int RSC, int Kp,
                    int KpAll, int kb) {
    constexpr int B = NV <= 4 ? 3 : 1;
    int tc = 0;
    auto sweep = [&](auto bc) {
        constexpr int BB = decltype(bc)::value;
        // a fresh partial sum per sweep of <= 64 pixels, added to the running total once: a single
        // running sum over every pixel of a large layer loses ~sqrt(pixels) ulps, this two-level one does not
        vf a[BB][NV];
        ET_UNROLL
        for (int j = 0; j < BB; j++)
            ET_UNROLL
            for (int v = 0; v < NV; v++) a[j][v] = vzero();
        for (int i = 0; i < nt; i++) {
            const vf* d = vptr(D + to[i] * KpAll + kb);
            const float* cr = col + (size_t)i * RSC + tc;
            ET_UNROLL
            for (int j = 0; j < BB; j++) {
                const float x = cr[j];
                ET_UNROLL
                for (int v = 0; v < NV; v++) a[j][v] += x * d[v];
            }
        }
        ET_UNROLL
        for (int j = 0; j < BB; j++)
            ET_UNROLL
            for (int v = 0; v < NV; v++) vptr(acc + (size_t)(tc + j) * Kp + kb)[v] += a[j][v];
    };
    for (; tc + B <= RSC; tc += B) sweep(std::integral_constant<int, B>());
    for (; tc < RSC; tc++) sweep(std::integral_constant<int, 1>());
}
using WgColsFn = void (*)(float*, const float*, const i64*, int, const float*, int, int, int, int);
static const WgColsFn wg_cols_table[9] = {nullptr, wg_cols<1>, wg_cols<2>, wg_cols<3>, wg_cols<4>,
                                          wg_cols<5>, wg_cols<6>, wg_cols<7>, wg_cols<8>};

bool ConvLayer::wg_by_im2col() const {
    return groups == 1 && R * S > 1 && R * S * Cg <= IM2COL_MAX && dw == 1 && in && in->a_all;
}

i64 ConvLayer::wg_im2col(const float* D, float* dWp) {
    const int RSC = R * S * C;
    const float* X = in->dense_values();
    const i64 Pout = (i64)N * OH * OW;
    const int T = max_threads(), OHW = OH * OW;
    std::vector<ABuf<float>> accs(T);
    std::vector<i64> exs(T, 0);
#pragma omp parallel num_threads(T)
    {
        const int t = thread_id(), nt = team_size();
        float* acc = (accs[t].reset((size_t)RSC * Kp, true), accs[t].data());
        constexpr int TW = 64;
        std::vector<float> col((size_t)TW * RSC);
        i64 to[TW];
        int n_in = 0;
        i64 ex = 0, valid = 0;  // valid: (tap, channel) entries of col that lie inside the input
        auto flush = [&]() {
            for (int kb = 0; kb < Kp; kb += KB) {
                const int nv = std::min(KB, Kp - kb) / VW;
                wg_cols_table[nv](acc, col.data(), to, n_in, D, RSC, Kp, KpAll, kb);
                ex += valid * nv * VW;
            }
            n_in = 0;
            valid = 0;
        };
        for (i64 o = split(Pout, nt, t); o < split(Pout, nt, t + 1); o++) {
            const int n = int(o / OHW), rem = int(o % OHW), oh = rem / OW, ow = rem % OW;
            const int ih0 = oh * sh - pt, iw0 = ow * sw - pl;
            float* cr = col.data() + (size_t)n_in * RSC;
            if (ih0 >= 0 && ih0 + (R - 1) * dh < H && iw0 >= 0 && iw0 + S - 1 < W) {
                for (int r = 0; r < R; r++)
                    std::memcpy(cr + r * S * C, X + (((i64)n * H + ih0 + r * dh) * W + iw0) * C, sizeof(float) * S * C);
                valid += RSC;
            } else {
                // border pixel: the taps outside the input are zero rows of col, so every pixel
                // takes the same two-level summation (and skipped taps are not counted)
                std::memset(cr, 0, sizeof(float) * RSC);
                each_tap(n, oh, ow, [&](int r, int s, i64 p) {
                    std::memcpy(cr + (r * S + s) * C, X + p * C, sizeof(float) * C);
                    valid += C;
                });
            }
            to[n_in++] = o;
            if (n_in == TW) flush();
        }
        if (n_in) flush();
        exs[t] = ex;
    }
    const i64 tot = (i64)RSC * Kp;  // dWp rows are (tap, channel): the same layout
#pragma omp parallel for schedule(static)
    for (i64 i = 0; i < tot; i++) {
        float v = 0.f;
        for (int t = 0; t < T; t++)
            if (accs[t].size()) v += accs[t][i];
        dWp[i] += v;
    }
    i64 ex = 0;
    for (i64 e : exs) ex += e;
    return ex;
}

// Pair-level WG requirement, counted from the constraint counts:
// sum over (o, valid tap, group) of |A(p) ∩ g| * |G(o) ∩ g|.
i64 ConvLayer::wg_required(const i32* gc) {
    const i32* ac = in->group_counts(0, groups);
    i64 req = 0;
    // rows (n, oh) in parallel: no divisions per pixel
#pragma omp parallel for schedule(static) reduction(+ : req)
    for (i64 row = 0; row < (i64)N * OH; row++) {
        const int n = int(row / OH), oh = int(row % OH);
        for (int ow = 0; ow < OW; ow++) {
            const i64 o = row * OW + ow;
            each_tap(n, oh, ow, [&](int, int, i64 p) {
                if (groups == 1) req += (i64)ac[p] * gc[o];
                else
                    for (int g = 0; g < groups; g++) req += (i64)ac[p * groups + g] * gc[o * groups + g];
            });
        }
    }
    return req;
}

// ------------------------------------------------------------------ depthwise BP/WG
// 0/1 byte mask of G, decoded a whole state word (64 or 32 elements) at a time.
static void g_mask(ActInfo& I, u8* m) {
    const i64 ne = I.P * (i64)I.C;
    const bool con = I.kind == KD_RELU || I.kind == KD_CLIP0 || I.kind == KD_HSWISH;
    if (!con || I.bpe == 0) {
        std::memset(m, 1, (size_t)ne);
        return;
    }
    const u64* bits = I.bits.data();
    if (I.bpe == 1) {  // ReLU-like: G is the state bit itself
        const i64 nw = (ne + 63) / 64;
#pragma omp parallel for schedule(static)
        for (i64 w = 0; w < nw; w++) {
            const u64 b = bits[w];
            const int n = int(std::min<i64>(64, ne - w * 64));
            u8* ET_RESTRICT mr = m + w * 64;
            if (I.kind == KD_RELU || I.kind == KD_CLIP0)
                for (int j = 0; j < n; j++) mr[j] = u8((b >> j) & 1);
            else
                for (int j = 0; j < n; j++) mr[j] = u8(I.in_g_state(int((b >> j) & 1)));
        }
        return;
    }
    const i64 nw = (ne + 31) / 32;
    const int kind = I.kind;
#pragma omp parallel for schedule(static)
    for (i64 w = 0; w < nw; w++) {
        const u64 b = bits[w];
        const int n = int(std::min<i64>(32, ne - w * 32));
        u8* ET_RESTRICT mr = m + w * 32;
        if (kind == KD_HSWISH)
            for (int j = 0; j < n; j++) mr[j] = u8(((b >> (2 * j)) & 3) != 0);
        else  // ReLU6 / Clip(0, hi): linear state only
            for (int j = 0; j < n; j++) mr[j] = u8(((b >> (2 * j)) & 3) == 1);
    }
}

// number of positions where both 0/1 byte masks are set (8 bytes per popcount)
static inline int and_count(const u8* a, const u8* b, int n) {
    int q = 0, c = 0;
    for (; c + 8 <= n; c += 8) {
        u64 x, y;
        std::memcpy(&x, a + c, 8);
        std::memcpy(&y, b + c, 8);
        q += __builtin_popcountll(x & y);
    }
    for (; c < n; c++) q += a[c] & b[c];
    return q;
}

void ConvLayer::bwd_depthwise(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db) {
    const double t0 = now_ms();
    ActInfo& O = *out;
    const i64 Pout = O.P, Pin = in->P;
    const int T = max_threads();
    const int RS = R * S;
    ABuf<float> D;
    D.reset((size_t)Pout * C);
    std::vector<std::vector<double>> dbp(T);
#pragma omp parallel num_threads(T)
    {
        const int t = thread_id(), nt = team_size();
        std::vector<float> fp(C);
        dbp[t].assign(C, 0.0);
        const bool fast = grad_rows_fast(O, grad_a, split(Pout, nt, t), split(Pout, nt, t + 1), D.data(), C,
                                         nullptr, dbp[t].data());
#pragma omp for schedule(static)
        for (i64 o = 0; o < (fast ? 0 : Pout); o++) {
            fprime_row(O, o, fp.data());
            const float* ga = grad_a + o * C;
            float* d = D.data() + o * C;
            for (int c = 0; c < C; c++) {
                d[c] = fp[c] != 0.f ? ga[c] * fp[c] : 0.f;
                dbp[t][c] += d[c];
            }
        }
    }
    if (db) sum_threads(dbp, db, C);
    // constraint masks for pair-level counting
    ABuf<u8> mg;
    mg.reset((size_t)Pout * C);
    g_mask(O, mg.data());
    const i32* gc = O.gcnt.data();
    const i64 dmacs = dense_macs();
    const int Cpad = round_up(C, VW);
    const int OHW = OH * OW;
    cbp = Counts();
    cwg = Counts();
    const double t1 = now_ms();
    if (g_in) {
        cbp.dense = dmacs;
        ActInfo* pg = const_cast<ActInfo*>(prevG);
        const bool con = pg && (pg->kind == KD_RELU || pg->kind == KD_CLIP0 || pg->kind == KD_HSWISH);
        ABuf<u8> mp;
        mp.reset((size_t)Pin * C);
        const std::vector<float> zeros(C, 0.f);
        if (con) g_mask(*pg, mp.data());
        else std::memset(mp.data(), 1, (size_t)Pin * C);
        const bool skip = !dense;
        std::vector<Counts> cnt(T);
#pragma omp parallel num_threads(T)
        {
            const int t = thread_id();
            i64 ex = 0, rq = 0;
#pragma omp for schedule(static)
            for (i64 p = 0; p < Pin; p++) {
                float* ET_RESTRICT gr = g_in + p * C;
                for (int c = 0; c < C; c++) gr[c] = 0.f;
                if (skip && con && pg->gcnt[p] == 0) continue;
                const int n = int(p / (H * W)), rem = int(p % (H * W)), ih = rem / W, iw = rem % W;
                const u8* mpr = mp.data() + p * C;
                int taps = 0;  // up to 32 taps go through dw_block (registers), the rest add in place
                i64 tpo[32];
                const float* twt[32];
                for (int r = 0; r < R; r++) {
                    int th = ih + pt - r * dh;
                    if (th < 0) continue;
                    if (sh == 2) { if (th & 1) continue; th >>= 1; }
                    else { if (th % sh) continue; th /= sh; }
                    if (th >= OH) continue;
                    for (int s = 0; s < S; s++) {
                        int tw = iw + pl - s * dw;
                        if (tw < 0) continue;
                        if (sw == 2) { if (tw & 1) continue; tw >>= 1; }
                        else { if (tw % sw) continue; tw /= sw; }
                        if (tw >= OW) continue;
                        const i64 o = (i64)n * OHW + (i64)th * OW + tw;
                        const u8* mgr = mg.data() + o * C;
                        rq += and_count(mgr, mpr, C);
                        if (skip && gc[o] == 0) continue;
                        ex += C;
                        const float* ET_RESTRICT w = Wf.data() + (size_t)(r * S + s) * Cpad;
                        if (taps < 32) {
                            tpo[taps] = o;
                            twt[taps++] = w;
                            continue;
                        }
                        if (taps == 32) { dw_block(gr, zeros.data(), D.data(), C, tpo, twt, taps); taps = 33; }
                        const float* ET_RESTRICT d = D.data() + o * C;
                        for (int c = 0; c < C; c++) gr[c] += d[c] * w[c];
                    }
                }
                if (taps <= 32) dw_block(gr, zeros.data(), D.data(), C, tpo, twt, taps);
                if (con)
                    for (int c = 0; c < C; c++) gr[c] = mpr[c] ? gr[c] : 0.f;
            }
            cnt[t].executed = ex;
            cnt[t].required = rq;
        }
        for (auto& c : cnt) { cbp.executed += c.executed; cbp.required += c.required; }
    }
    const double t2 = now_ms();
    if (dW) {
        cwg.dense = dmacs;
        const float* X = in->dense_values();  // materialised for this WG only (dropped below)
        ABuf<u8> ma;
        ma.reset((size_t)Pin * C);
        {
            const bool con = in->a_constrained;
            u8* m = ma.data();
#pragma omp parallel for schedule(static)
            for (i64 i = 0; i < Pin * C; i++) m[i] = con ? (u8)(X[i] != 0.f) : (u8)1;
        }
        const i32* ac = in->acnt.data();
        const bool skip = !dense;
        std::vector<std::vector<double>> part(T);
        std::vector<Counts> cnt(T);
#pragma omp parallel num_threads(T)
        {
            const int t = thread_id();
            // two-level sum: float partials over <= 64 pixels, added to a double total (one running
            // float sum over every pixel of a large layer would lose ~sqrt(pixels) ulps)
            std::vector<float> acc((size_t)RS * C, 0.f);
            std::vector<double> total((size_t)RS * C, 0.0);
            int pending = 0;
            auto flush = [&]() {
                for (size_t i = 0; i < acc.size(); i++) { total[i] += acc[i]; acc[i] = 0.f; }
                pending = 0;
            };
            i64 ex = 0, rq = 0;
#pragma omp for schedule(static)
            for (i64 o = 0; o < Pout; o++) {
                if (pending == 64) flush();
                if (skip && gc[o] == 0) continue;
                pending++;
                const int n = int(o / OHW), rem = int(o % OHW), oh = rem / OW, ow = rem % OW;
                const float* ET_RESTRICT d = D.data() + o * C;
                const u8* mgr = mg.data() + o * C;
                each_tap(n, oh, ow, [&](int r, int s, i64 p) {
                    rq += and_count(mgr, ma.data() + p * C, C);
                    if (skip && ac[p] == 0) return;
                    ex += C;
                    const float* ET_RESTRICT x = X + p * C;
                    float* ET_RESTRICT a = acc.data() + (size_t)(r * S + s) * C;
                    for (int c = 0; c < C; c++) a[c] += d[c] * x[c];
                });
            }
            flush();
            part[t].assign(total.begin(), total.end());
            cnt[t].executed = ex;
            cnt[t].required = rq;
        }
        for (auto& c : cnt) { cwg.executed += c.executed; cwg.required += c.required; }
        std::vector<float> packed((size_t)RS * C);  // [rs][c]
        sum_threads(part, packed.data(), packed.size());
        for (int c = 0; c < C; c++)
            for (int rs = 0; rs < RS; rs++) dW[(size_t)c * RS + rs] = packed[(size_t)rs * C + c];
    }
    in->drop_caches();  // a dense copy of the input made for this layer's BP/WG
    phase_times(t0, t1, t2, now_ms(), g_in != nullptr);
}

// The d = grad_a * f'(z) prologue serves both phases; it is booked to BP (the
// error propagation) when BP runs, else to WG.
void ConvLayer::phase_times(double t0, double t1, double t2, double t3, bool bp) {
    ms_bp = (t2 - t1) + (bp ? t1 - t0 : 0.0);
    ms_wg = (t3 - t2) + (bp ? 0.0 : t1 - t0);
}

}  // namespace et
