// WGEMM micro-kernel family (the weight gradient): MR input channels x NR vectors of output
// channels held in registers, summed over steps (output pixels) that each give MR consecutive
// input values (one broadcast each) and NR vectors of d. The steps come as segments of constant
// stride (a row of output pixels for one tap). Variants: NR = 1..kMaxNR, MR = tile_mr(NR),
// listed in wgemm_kernel().
//
// The kernel sums a stretch of steps from zero and adds the result into c, so a long reduction
// (every pixel of a layer) is summed in two levels: rounding grows like the stretch plus the
// number of stretches, not like the number of pixels.
#pragma once
#include "tiles.hpp"

namespace et {

struct WgSeg {
    const float* a;  // first step's MR input values
    const float* b;  // first step's d vectors
    int n;           // steps
};

struct WgemmArgs {
    const WgSeg* seg = nullptr;
    int nseg = 0;
    i64 lda = 0, ldb = 0;  // stride between steps of a segment
    float* c = nullptr;    // MR rows of NR*VW floats (+=), row stride ldc
    i64 ldc = 0;
    int rows = 0;          // rows of c to add (<= MR; the others are computed and dropped)
};

template <int MR, int NR>
void wgemm(const WgemmArgs& A) {
    vf acc[MR][NR];
    ET_UNROLL
    for (int i = 0; i < MR; i++)
        ET_UNROLL
        for (int j = 0; j < NR; j++) acc[i][j] = vzero();
    const i64 lda = A.lda, ldb = A.ldb;
    for (int s = 0; s < A.nseg; s++) {
        const float* ET_RESTRICT ap = A.seg[s].a;
        const float* ET_RESTRICT bp = A.seg[s].b;
        for (int k = 0; k < A.seg[s].n; k++) {
            vf bv[NR];
            ET_UNROLL
            for (int j = 0; j < NR; j++) bv[j] = loadu(bp + j * VW);
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {
                const float x = ap[i];
                ET_UNROLL
                for (int j = 0; j < NR; j++) acc[i][j] += x * bv[j];
            }
            ap += lda;
            bp += ldb;
        }
    }
    for (int i = 0; i < A.rows; i++)
        ET_UNROLL
        for (int j = 0; j < NR; j++) {
            float* cp = A.c + i * A.ldc + j * VW;
            storeu(cp, loadu(cp) + acc[i][j]);
        }
}

using WgemmFn = void (*)(const WgemmArgs&);

inline WgemmFn wgemm_kernel(int nr) {
    static const WgemmFn table[5] = {nullptr, wgemm<tile_mr(1), 1>, wgemm<tile_mr(2), 2>,
                                     kMaxNR >= 3 ? wgemm<tile_mr(3), kMaxNR >= 3 ? 3 : 1> : nullptr,
                                     kMaxNR >= 4 ? wgemm<tile_mr(4), kMaxNR >= 4 ? 4 : 1> : nullptr};
    return table[nr];
}

}  // namespace et
