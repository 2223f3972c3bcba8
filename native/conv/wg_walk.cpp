// WG by list walks: the input's non-zeros, transposed per tile and channel, walked against the
// dense d rows, one dW row (or a group of taps' rows) in registers; and the register-blocked
// outer product of a first conv's im2col rows (few input channels).
#include "walk.hpp"

namespace et {

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
// WG by list walks over the input's transposed lists (per tile, per channel), the d rows dense.
i64 ConvLayer::wg_walk(const float* D, const i32* gc, float* dWp) {
    const i64 Pout = out->P;
    const int RS = R * S;
    const i64 items = (i64)C * RS;
    TGeo Gg;
    const bool hg = wg_geo(Gg);
    const std::unique_ptr<Transposed> Tptr = in->transposed(pointwise, tile_px(), hg ? &Gg : nullptr);
    const Transposed& TT = *Tptr;
    bool any_empty = false;
    if (!dense)
        for (i64 i = 0; i < Pout * groups && !any_empty; i++) any_empty = gc[i] == 0;
    WgArgs A{this, &TT, D, D + Pout * KpAll, gc, dWp, OH, OW, in->a_constrained, any_empty};
    const int var = hg ? (any_empty ? 4 : 3)
                    : pointwise ? 2
                    : (sh == 1 && sw == 1) ? 1
                    : (sh == 2 && sw == 2) ? 5 : 0;
    // work items: (channel, tap); the geo variants walk one channel's list for a group of taps,
    // so their items are whole channels. Items are cut into units of about equal list work
    // (handed out dynamically); each unit writes its own dW rows, so no sum crosses units.
    const bool grouped = var == 3 || var == 4;
    const i64 step_items = grouped ? RS : 1;
    const i64 nitems = items / step_items;
    std::vector<i64> pre(nitems + 1, 0);
    for (i64 u = 0; u < nitems; u++) {
        const int c = int(u * step_items / RS);
        pre[u + 1] = pre[u] + step_items * (in->a_all ? 1 : in->chan_nnz[c] + 1);
    }
    const i64 want = std::min<i64>(nitems, (i64)std::max(1, pool_threads()) * 8);
    std::vector<i64> ub(1, 0);
    for (i64 u = 0; u < nitems; u++)
        if (pre[u + 1] * want >= (i64)ub.size() * pre[nitems] && u + 1 < nitems) ub.push_back(u + 1);
    ub.push_back(nitems);
    ThreadCounts cnt;
    parallel_for((i64)ub.size() - 1, 1, [&](i64 b0, i64 b1, int t) {
        const i64 i0 = ub[b0] * step_items, i1 = ub[b1] * step_items;
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
        cnt[t].executed += ex;
    });
    return cnt.total().executed;
}

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
i64 ConvLayer::wg_im2col(const float* D, float* dWp) {
    const int RSC = R * S * C;
    const float* X = in->dense_values();
    const i64 Pout = (i64)N * OH * OW;
    const int OHW = OH * OW;
    // chunks of output pixels, each summed into its own partial (zeroed), the partials added in
    // chunk order: the result does not depend on the thread count
    constexpr i64 kChunk = 1024;
    const i64 nch = (Pout + kChunk - 1) / kChunk;
    const i64 tot = (i64)RSC * Kp;  // dWp rows are (tap, channel): the same layout
    ABuf<float> parts;
    parts.reset((size_t)(nch * tot), true);
    ThreadCounts cnt;
    parallel_for(nch, 1, [&](i64 c0, i64 c1, int t) {
        constexpr int TW = 64;
        std::vector<float> col((size_t)TW * RSC);
        i64 to[TW];
        i64 ex = 0;
        for (i64 c = c0; c < c1; c++) {
            float* acc = parts.data() + c * tot;
            int n_in = 0;
            i64 valid = 0;  // valid: (tap, channel) entries of col that lie inside the input
            auto flush = [&]() {
                for (int kb = 0; kb < Kp; kb += KB) {
                    const int nv = std::min(KB, Kp - kb) / VW;
                    wg_cols_table[nv](acc, col.data(), to, n_in, D, RSC, Kp, KpAll, kb);
                    ex += valid * nv * VW;
                }
                n_in = 0;
                valid = 0;
            };
            for (i64 o = c * kChunk; o < std::min(Pout, (c + 1) * kChunk); o++) {
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
        }
        cnt[t].executed += ex;
    });
    parallel_each(tot, [&](i64 i) {
        float v = 0.f;
        for (i64 c = 0; c < nch; c++) v += parts[(size_t)(c * tot + i)];
        dWp[i] += v;
    }, 256);
    return cnt.total().executed;
}

}  // namespace et
