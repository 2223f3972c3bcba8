// IGEMM micro-kernel family: MR output rows x NR vectors held in registers, the reduction over
// segments that each give one input row per output row through an indirection (a tap of the
// conv: the input pixel that tap reads, or a zero row outside the image) and its weight panel.
// FP (rows: output pixels, inputs: activation rows) and BP (rows: input pixels, inputs: the
// error rows d) both run it. Variants: NR = 1..kMaxNR, MR = tile_mr(NR) (tiles.hpp), listed in
// igemm_kernel().
//
// Each output element is summed over segments in order and channels in order: the same bits
// whichever thread runs a tile.
#pragma once
#include "tiles.hpp"

namespace et {

struct IgemmArgs {
    int nseg = 0;              // segments (taps) of this pass
    int kc = 0;                // reduction steps per segment (channels)
    const float* const* a;     // a[s * lda + i]: row i's input row base in segment s
    i64 lda = 0;               // pointers per segment
    i64 aoff = 0;              // element offset added to every row base (group, channel start)
    const float* const* w;     // w[s]: the segment's panel, kc rows of NR*VW floats
    float* c = nullptr;        // MR output rows of NR*VW floats, row stride ldc
    i64 ldc = 0;
    const float* init = nullptr;  // NR*VW start values (bias); null: start from c
};

template <int MR, int NR>
void igemm(const IgemmArgs& A) {
    vf acc[MR][NR];
    if (A.init) {
        ET_UNROLL
        for (int j = 0; j < NR; j++) {
            const vf b = loadu(A.init + j * VW);
            ET_UNROLL
            for (int i = 0; i < MR; i++) acc[i][j] = b;
        }
    } else {
        ET_UNROLL
        for (int i = 0; i < MR; i++)
            ET_UNROLL
            for (int j = 0; j < NR; j++) acc[i][j] = loadu(A.c + i * A.ldc + j * VW);
    }
    const int kc = A.kc;
    for (int s = 0; s < A.nseg; s++) {
        const float* ap[MR];
        ET_UNROLL
        for (int i = 0; i < MR; i++) ap[i] = A.a[s * A.lda + i] + A.aoff;
        const float* ET_RESTRICT wp = A.w[s];
        for (int k = 0; k < kc; k++) {
            vf wv[NR];
            ET_UNROLL
            for (int j = 0; j < NR; j++) wv[j] = loadu(wp + j * VW);
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {
                const float x = ap[i][k];
                ET_UNROLL
                for (int j = 0; j < NR; j++) acc[i][j] += x * wv[j];
            }
            wp += NR * VW;
        }
    }
    ET_UNROLL
    for (int i = 0; i < MR; i++)
        ET_UNROLL
        for (int j = 0; j < NR; j++) storeu(A.c + i * A.ldc + j * VW, acc[i][j]);
}

using IgemmFn = void (*)(const IgemmArgs&);

// The variant for a block of nr vectors (1..kMaxNR); its rows are tile_mr(nr).
inline IgemmFn igemm_kernel(int nr) {
    static const IgemmFn table[5] = {nullptr, igemm<tile_mr(1), 1>, igemm<tile_mr(2), 2>,
                                     kMaxNR >= 3 ? igemm<tile_mr(3), kMaxNR >= 3 ? 3 : 1> : nullptr,
                                     kMaxNR >= 4 ? igemm<tile_mr(4), kMaxNR >= 4 ? 4 : 1> : nullptr};
    return table[nr];
}

}  // namespace et
