// The element list walks (docs/ARCHITECTURE.md, "The kernels"): one output row's NV vectors of
// accumulators held in registers while the sparse operand's non-zero list is walked in the
// broadcast role. They execute only the listed entries, so they win where a layer's operand
// is sparse at element level without zero rows or blocks; they load a weight row per entry
// (no reuse across pixels), so at low sparsity the register-tiled kernels (native/ukernels/)
// win. Shared by fp_walk.cpp and bp_walk.cpp.
#pragma once
#include "../cpu.hpp"
#include "internal.hpp"

namespace et {
// ------------------------------------------------------------------ FP

// U independent accumulator sets hide the FMA latency when NV is small (the partial sums are
// added at the end).
template <int NV>
constexpr int acc_sets() { return NV >= 8 ? 1 : NV >= 4 ? 2 : NV >= 2 ? 4 : 8; }

// acc[u][0..NV) += sum_j xs[j] * row(j)[0..NV), the entries spread over the U sets; the last
// n % U entries of a list whose length is random are one masked step of U entries (value 0,
// row of the last entry) instead of a loop whose exit mispredicts.
template <int NV, int U, class Row>
inline void walk_rows(vf (&acc)[U][NV], const float* ET_RESTRICT xs, int n, Row row) {
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
inline void list_acc(vf (&acc)[U][NV], const float* ET_RESTRICT wrs, int ld, const float* ET_RESTRICT xv,
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
inline void acc_zero(vf (&acc)[U][NV]) {
    ET_UNROLL
    for (int u = 0; u < U; u++)
        ET_UNROLL
        for (int v = 0; v < NV; v++) acc[u][v] = vzero();
}

template <int NV, int U>
inline void acc_reduce_store(vf (&acc)[U][NV], float* z) {
    ET_UNROLL
    for (int u = 1; u < U; u++)
        ET_UNROLL
        for (int v = 0; v < NV; v++) acc[0][v] += acc[u][v];
    ET_UNROLL
    for (int v = 0; v < NV; v++) vptr(z)[v] = acc[0][v];
}

// z[0..NV vectors) += sum_j x[j] * w[(ix[j]-base)*ld ...): one list into partial sums kept in memory.
template <int NV>
inline void list_fma(float* z, const float* ET_RESTRICT wrs, int ld, const float* ET_RESTRICT xv,
                            const i32* ET_RESTRICT ix, int base, int cnt, int width) {
    constexpr int U = acc_sets<NV>();
    vf acc[U][NV];
    acc_zero(acc);
    ET_UNROLL
    for (int v = 0; v < NV; v++) acc[0][v] = vptr(z)[v];
    list_acc(acc, wrs, ld, xv, ix, base, cnt, width);
    acc_reduce_store(acc, z);
}
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
inline vu loadu_u(const void* p) { vu r; std::memcpy(&r, p, sizeof r); return r; }
inline void storeu_u(void* p, vu v) { std::memcpy(p, &v, sizeof v); }
#endif

// Append one row of n entries (channels ix relative to `base`, values xv): offsets
// (ix - base) * ldb + tapoff. n is rounded up to whole vectors, never to the channel count: a
// short last row of a list sits at its buffer's end, which has one vector of slack and no more.
inline void join_row(u32* ET_RESTRICT off, float* ET_RESTRICT xs, const i32* ix, const float* xv, int n,
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
inline void walk_joined(vf (&acc)[U][NV], const char* ET_RESTRICT wb, const u32* ET_RESTRICT off,
                               const float* ET_RESTRICT xs, int n) {
    walk_rows(acc, xs, n, [=](int j) { return reinterpret_cast<const vf*>(wb + off[j]); });
}

// Taps per joined walk: as many as keep the group's weight block (taps * rows * NV vectors)
// within half the L1d, read at run time (the rest holds the lists and the partial sums).
inline int join_taps(int RS, int rows, int nv) {
    const size_t per_tap = (size_t)rows * nv * VW * sizeof(float);
    const size_t budget = (size_t)cache_sizes().l1d / 2;
    return (int)std::max<size_t>(1, std::min<size_t>((size_t)RS, budget / std::max<size_t>(per_tap, 1)));
}

// FP of one register block (NV vectors of K at kb) for a tile of output pixels: for each
// group of taps (outer, so that its weights stay in L1 across the tile), each pixel joins its
// input lists over the group's taps and walks them once; partial sums of earlier groups come

}  // namespace et
