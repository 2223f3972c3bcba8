// WG by the register-tiled WGEMM micro-kernels (native/ukernels/wgemm.hpp): each unit is one
// tap, MR input channels and NR vectors of output channels of dW, summed over every output pixel
// the tap reaches; the pixels come as row segments (a row of outputs reads a row of inputs at a
// constant stride). A pixel is left out where either operand's row is zero as a whole, as the
// plan built in FP says (its d row outside G, or its input pixel outside A, in the group): both
// operands skipped at row level. Units write disjoint rows of dW, so they run on any thread in
// any order and give the same bits.
#include "../ukernels/wgemm.hpp"
#include "internal.hpp"

namespace et {

namespace {
struct SegOff {
    i64 a, b;  // element offsets of the first step's input row and d row
    int n;
};
constexpr int kStretch = 256;  // steps summed in registers before they are added into dW
}  // namespace

i64 ConvLayer::wg_tiled(const float* D, const i32* gc, float* dWp) {
    const float* X = in->dense_values();
    const int RS = R * S;
    const i32* ac = in->group_counts(0, groups);
    const bool skip = !dense;
    // segments per (group, tap): for each output row, the runs of outputs whose input lies inside
    // the image and whose two rows are not zero as a whole
    std::vector<std::vector<SegOff>> segs((size_t)groups * RS);
    for (int g = 0; g < groups; g++)
    for (int t = 0; t < RS; t++) {
        const int r = t / S, s = t - r * S;
        // ow with 0 <= ow*sw - pl + s*dw < W
        const int num0 = pl - s * dw;  // ow*sw >= num0
        const int ow0 = std::max(0, num0 <= 0 ? 0 : (num0 + sw - 1) / sw);
        const int ow1 = std::min(OW, (W - 1 + pl - s * dw) < 0 ? 0 : (W - 1 + pl - s * dw) / sw + 1);
        if (ow1 <= ow0) continue;
        for (int n = 0; n < N; n++)
            for (int oh = 0; oh < OH; oh++) {
                const int ih = oh * sh - pt + r * dh;
                if ((unsigned)ih >= (unsigned)H) continue;
                const i64 orow = ((i64)n * OH + oh) * OW, prow = ((i64)n * H + ih) * W;
                std::vector<SegOff>& sl = segs[(size_t)g * RS + t];
                for (int a = ow0; a < ow1;) {
                    auto live = [&](int ow) {
                        return !skip || (gc[(orow + ow) * groups + g] != 0 &&
                                         ac[(prow + ow * sw - pl + s * dw) * groups + g] != 0);
                    };
                    while (a < ow1 && !live(a)) a++;
                    int e = a;
                    while (e < ow1 && live(e)) e++;
                    if (e > a)
                        sl.push_back(SegOff{(prow + a * sw - pl + s * dw) * C, (orow + a) * KpAll, e - a});
                    a = e;
                }
            }
    }
    const NrBlocks kb(Kp / VW);
    // units: (group, K block, tap, channel block)
    struct Unit {
        int g, b, t, c0;
    };
    std::vector<Unit> units;
    for (int g = 0; g < groups; g++)
        for (int b = 0; b < kb.n; b++) {
            const int mr = tile_mr(kb.nr[b]);
            for (int t = 0; t < RS; t++)
                for (int c0 = 0; c0 < Cg; c0 += mr) units.push_back(Unit{g, b, t, c0});
        }
    ThreadCounts cnt;
    parallel_for((i64)units.size(), 1, [&](i64 u0, i64 u1, int tid) {
        WgSeg buf[64];
        for (i64 u = u0; u < u1; u++) {
            const Unit& U = units[(size_t)u];
            const int nr = kb.nr[U.b], mr = tile_mr(nr), k0 = kb.first[U.b] * VW;
            const WgemmFn kern = wgemm_kernel(nr);
            WgemmArgs A;
            A.lda = (i64)sw * C;
            A.ldb = KpAll;  // one output pixel per step
            A.c = dWp + (((size_t)U.g * RS + U.t) * Cg + U.c0) * Kp + k0;
            A.ldc = Kp;
            A.rows = std::min(mr, Cg - U.c0);
            A.seg = buf;
            const i64 aoff = (i64)U.g * Cg + U.c0, boff = (i64)U.g * Kp + k0;
            const std::vector<SegOff>& sl = segs[(size_t)U.g * RS + U.t];
            i64 steps = 0;
            size_t i = 0;
            while (i < sl.size()) {
                int ns = 0, run = 0;
                for (; i < sl.size() && ns < 64 && run < kStretch; i++, ns++) {
                    buf[ns] = WgSeg{X + sl[i].a + aoff, D + sl[i].b + boff, sl[i].n};
                    run += sl[i].n;
                }
                A.nseg = ns;
                kern(A);
                steps += run;
            }
            cnt[tid].executed += steps * A.rows * nr * VW;  // the rows kept (as in fp_tiled)
        }
    });
    return cnt.total().executed;
}

}  // namespace et
