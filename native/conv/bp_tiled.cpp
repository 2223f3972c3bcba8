// BP by the register-tiled IGEMM micro-kernels (native/ukernels/igemm.hpp): tiles of MR input
// pixels x NR vectors of input channels, the error rows d of the output pixels each tap reaches
// through an indirection table. Strided layers are cut into phase classes (the input pixels with
// the same ih mod sh and iw mod sw reach outputs through the same taps), so no tile multiplies
// the taps that cannot reach it. Input pixels outside the previous activation's G are left out
// of the tiles (their gradient is zero): output sparsity at pixel level.
#include "../cpu.hpp"
#include "tiled.hpp"

namespace et {

namespace {
constexpr int kChunk = 48;  // input pixels per chunk: a multiple of every tile_mr

struct BpChunk {
    int cls;     // phase class
    i64 first;   // index of its first pixel in the class-ordered pixel list
    int n;       // pixels
};

inline int pmod(int a, int m) { return ((a % m) + m) % m; }

struct Px {
    i64 p;
    int n, ih, iw;
};

// a / m for an a the caller knows m divides (strides 1 and 2 without a division)
inline int exact_div(int a, int m) { return m == 1 ? a : m == 2 ? a >> 1 : a / m; }
}  // namespace

void ConvLayer::bp_tiled(const float* D, float* g_in, const ActInfo* prevG) {
    const i64 Pin = in->P;
    const int RS = R * S, OHW = OH * OW;
    const float* Dzero = D + out->P * KpAll;  // the zero row after the last output row
    cbp.dense = dense_macs();
    ActInfo* pg = const_cast<ActInfo*>(prevG);
    const bool mask = pg && (pg->kind == KD_RELU || pg->kind == KD_CLIP0 || pg->kind == KD_HSWISH);
    const i32* pgc = mask ? pg->group_counts(1, groups) : nullptr;
    const bool skip_px = mask && !dense;
    const i32* gc = out->group_counts(1, groups);
    // phase classes: their pixels in order, and the taps that reach an output from them
    const int ncls = sh * sw;
    std::vector<Px> order;
    order.reserve((size_t)Pin);
    std::vector<i64> cls_start(ncls + 1, 0);
    std::vector<std::vector<int>> cls_taps(ncls);
    for (int rh = 0; rh < sh; rh++)
        for (int rw = 0; rw < sw; rw++) {
            const int cl = rh * sw + rw;
            cls_start[cl] = (i64)order.size();
            for (int t = 0; t < RS; t++) {
                const int r = t / S, s = t - r * S;
                if (pmod(rh + pt - r * dh, sh) == 0 && pmod(rw + pl - s * dw, sw) == 0) cls_taps[cl].push_back(t);
            }
            for (int n = 0; n < N; n++)
                for (int ih = rh; ih < H; ih += sh)
                    for (int iw = rw; iw < W; iw += sw) {
                        const i64 p = ((i64)n * H + ih) * W + iw;
                        // no tap reaches an output, or nothing of the gradient is kept: zero
                        if (cls_taps[cl].empty() || (skip_px && pg->gcnt[p] == 0)) {
                            std::memset(g_in + p * C, 0, sizeof(float) * C);
                            continue;
                        }
                        order.push_back(Px{p, n, ih, iw});
                    }
        }
    cls_start[ncls] = (i64)order.size();
    std::vector<BpChunk> chunks;
    for (int cl = 0; cl < ncls; cl++)
        for (i64 f = cls_start[cl]; f < cls_start[cl + 1]; f += kChunk)
            chunks.push_back(BpChunk{cl, f, int(std::min<i64>(kChunk, cls_start[cl + 1] - f))});
    const NrBlocks cb(Cp / VW);
    std::vector<int> tap_r(RS), tap_s(RS);
    for (int t = 0; t < RS; t++) { tap_r[t] = t / S; tap_s[t] = t % S; }
    const int rows_budget = std::max(8, cache_sizes().l1d / 2 / (kMaxNR * VW * 4));
    const int kstep = std::min(Kg, rows_budget);
    const int tstep = std::max(1, rows_budget / std::max(kstep, 1));
    const int CpAll = groups * Cp;
    const i64 lda = kChunk + kMaxMR;
    struct Scratch {
        ABuf<float> gt;
        std::vector<const float*> ptr, wseg;
    };
    PerThread<Scratch> scratch;
    ThreadCounts cnt;
    parallel_for((i64)chunks.size(), 1, [&](i64 q0, i64 q1, int tid) {
        Scratch& sc = scratch[tid];
        if (!sc.gt.size()) {
            sc.gt.reset((size_t)(kChunk + kMaxMR) * CpAll + VW);
            sc.ptr.resize((size_t)RS * lda);
            sc.wseg.resize((size_t)RS);
        }
        for (i64 q = q0; q < q1; q++) {
            const BpChunk& ch = chunks[(size_t)q];
            const std::vector<int>& taps = cls_taps[ch.cls];
            const int ntv = (int)taps.size();
            const Px* px = order.data() + ch.first;
            i64 rq = 0, pairs = 0;
            for (i64 i = 0; i < lda; i++) {
                const Px& X_ = px[std::min<i64>(i, ch.n - 1)];  // tile padding repeats the last pixel
                const i64 p = X_.p;
                const int n = X_.n, ih = X_.ih, iw = X_.iw;
                for (int v = 0; v < ntv; v++) {
                    const int t = taps[v], r = tap_r[t], s = tap_s[t];
                    const int nh = ih + pt - r * dh, nw = iw + pl - s * dw;
                    const int th = exact_div(nh, sh), tw = exact_div(nw, sw);  // exact: the class divides
                    const bool ok = nh >= 0 && nw >= 0 && th < OH && tw < OW;
                    const i64 o = (i64)n * OHW + (i64)th * OW + tw;
                    sc.ptr[(size_t)v * lda + i] = ok ? D + o * KpAll : Dzero;
                    pairs += ok && i < ch.n;
                    if (ok && i < ch.n)
                        for (int g = 0; g < groups; g++)
                            rq += (i64)gc[o * groups + g] * (pgc ? pgc[p * groups + g] : Cg);
                }
            }
            float* gt = sc.gt.data();
            ChunkPasses P;
            P.groups = groups;
            P.blocks = &cb;
            P.panels = Wbt.data();
            P.panel_group = (i64)RS * Kg * Cp;
            P.panel_rows = (i64)RS * Kg;
            P.red = Kg;
            P.nseg = ntv;
            P.seg_tap = taps.data();
            P.seg_step = tstep;
            P.red_step = kstep;
            P.ptr = sc.ptr.data();
            P.lda = lda;
            P.a_group = Kp;
            P.out = gt;
            P.ldc = CpAll;
            P.out_group = Cp;
            run_chunk_passes(P, ch.n, sc.wseg);
            cnt[tid].required += rq;
            cnt[tid].executed += pairs * Kg * CpAll;  // valid products, lanes included (as in fp_tiled)
            // the input gradient, masked by the previous activation's G
            for (int i = 0; i < ch.n; i++) {
                const i64 p = px[i].p;
                const float* b = gt + (size_t)i * CpAll;
                float* gr = g_in + p * C;
                for (int g = 0; g < groups; g++) std::memcpy(gr + g * Cg, b + g * Cp, sizeof(float) * Cg);
                if (mask) mask_by_g(*pg, p, gr);
            }
        }
    });
    const Counts c = cnt.total();
    cbp.executed += c.executed;
    cbp.required += c.required;
}

}  // namespace et
