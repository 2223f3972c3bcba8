// MAC counters (docs/ARCHITECTURE.md, "The report"): dense (every valid tap), and the pair-level
// requirement of WG counted from the constraint counts FP built.
#include "internal.hpp"

namespace et {

i64 ConvLayer::dense_macs() const {
    i64 vr = 0, vs = 0;
    for (int oh = 0; oh < OH; oh++)
        for (int r = 0; r < R; r++) { int ih = oh * sh - pt + r * dh; vr += (ih >= 0 && ih < H); }
    for (int ow = 0; ow < OW; ow++)
        for (int s = 0; s < S; s++) { int iw = ow * sw - pl + s * dw; vs += (iw >= 0 && iw < W); }
    return (i64)N * vr * vs * Cg * K;
}

// Pair-level WG requirement: sum over (o, valid tap, group) of |A(p) ∩ g| * |G(o) ∩ g|.
i64 ConvLayer::wg_required(const i32* gc) {
    const i32* ac = in->group_counts(0, groups);
    std::vector<i64> part((size_t)std::max(1, pool_threads()), 0);
    // rows (n, oh) in parallel: no divisions per pixel
    parallel_for((i64)N * OH, 4, [&](i64 r0, i64 r1, int t) {
        i64 req = 0;
        for (i64 row = r0; row < r1; row++) {
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
        part[(size_t)t] += req;
    });
    i64 req = 0;
    for (i64 v : part) req += v;
    return req;
}

}  // namespace et
