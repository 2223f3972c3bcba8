// BP by element list walks (walk.hpp): each input pixel joins the G lists of the output pixels
// its taps reach (the error d in the broadcast role) and walks them once.
#include "walk.hpp"

namespace et {

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

// BP: g_in = W^T d over the taps, then masked by the previous layer's G (prevG; null: no mask).
void ConvLayer::bp_walk(const RowView& GV, const float* dvals, const i32* gc, float* g_in, const ActInfo* prevG) {
    const i64 Pin = in->P;
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
    struct Scratch {
        ABuf<float> bt, jx;
        ABuf<u32> joff;
        ABuf<i32> rowbuf;
    };
    PerThread<Scratch> scratch;
    ThreadCounts cnt;
    const size_t jcap = (size_t)R * S * round_up(Kg, VW) + VW;
    // items: tiles of TPIX input pixels, handed out dynamically
    const i64 ntiles = (Pin + TPIX - 1) / TPIX;
    parallel_for(ntiles, 1, [&](i64 q0, i64 q1, int t) {
        const i64 p0 = q0 * TPIX, p1 = std::min(Pin, q1 * TPIX);
        Scratch& S_ = scratch[t];
        if (!S_.bt.size()) {
            S_.bt.reset((size_t)TPIX * CpAll);
            S_.joff.reset(jcap);
            S_.jx.reset(jcap);
            S_.rowbuf.reset((size_t)std::max(C, K) + 16);
        }
        ABuf<float>& bt = S_.bt;
        ABuf<i32>& rowbuf = S_.rowbuf;
        BpArgs B = A;
        B.btile = bt.data();
        B.joff = S_.joff.data();
        B.jx = S_.jx.data();
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
                    if (mmode == 2) mask_by_g(*pg, p, gr);
                }
            }
        }
        cnt[t].executed += ex;
        cnt[t].required += rq;
    });
    const Counts c = cnt.total();
    cbp.executed += c.executed;
    cbp.required += c.required;
}

}  // namespace et
