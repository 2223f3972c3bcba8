// FP by element list walks (walk.hpp): each output pixel joins its input's non-zero lists over
// a group of taps and walks them once, its accumulators in registers.
#include "walk.hpp"

namespace et {

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

void ConvLayer::fp_walk(const InfoPtr& x, Epi& E) {
    const bool im2col = groups == 1 && R * S > 1 && R * S * Cg <= IM2COL_MAX;
    RowView V = x->view_a(groups);
    ABuf<i32> decoded;
    materialize(V, decoded);
    const float* vals = x->a_values();  // a along the A lists (recomputed for hard-swish)
    const i32* reqc = x->group_counts(0, groups);
    const i64 Pout = (i64)N * OH * OW;
    const FpFn* kernels = im2col ? fp_im2col_table : fp_table;
    const size_t jcap = (size_t)R * S * round_up(Cg, VW) + VW;
    struct Scratch {
        ABuf<float> ztile, zrow, jx;
        ABuf<u32> joff;
        ABuf<i32> rowbuf;
    };
    PerThread<Scratch> scratch;
    ThreadCounts cnt;
    E.begin_chunks(TPIX);
    // one tile of TPIX output pixels per item, handed out dynamically
    parallel_for(E.nchunks, 1, [&](i64 c0, i64 c1, int t) {
        Scratch& Sc = scratch[t];
        if (!Sc.ztile.size()) {
            Sc.ztile.reset((size_t)TPIX * KpAll);
            Sc.zrow.reset((size_t)K + VW);
            Sc.joff.reset(jcap);
            Sc.jx.reset(jcap);
            Sc.rowbuf.reset((size_t)C + 16);
        }
        FpArgs A{this, &V, vals, reqc, Sc.ztile.data(), H, W, OH, OW, Sc.joff.data(), Sc.jx.data(), Sc.rowbuf.data()};
        i64 ex = 0, rq = 0;
        for (i64 tp = c0 * TPIX; tp < std::min(Pout, c1 * TPIX); tp += TPIX) {
            const i64 te = std::min(Pout, tp + TPIX);
            for (int g = 0; g < groups; g++)
                for (int kb = 0; kb < Kp; kb += KB) {
                    const int nv = std::min(KB, Kp - kb) / VW;
                    i64 ent = 0, req = 0;
                    kernels[nv](A, tp, te, g, kb, ent, req);
                    ex += ent * nv * VW;
                    if (kb == 0) rq += req * Kg;
                }
            for (i64 o = tp; o < te; o++) {
                const float* zr = Sc.ztile.data() + (o - tp) * KpAll;
                if (groups > 1) {
                    for (int g = 0; g < groups; g++)
                        std::memcpy(Sc.zrow.data() + g * Kg, zr + g * Kp, sizeof(float) * Kg);
                    zr = Sc.zrow.data();
                }
                E.row(t, o, zr);
            }
        }
        cnt[t].executed += ex;
        cnt[t].required += rq;
    });
    cfp = cnt.total();
}

}  // namespace et
