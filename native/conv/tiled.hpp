// The passes of one chunk of the tiled FP and BP (fp_tiled.cpp, bp_tiled.cpp): for each group and
// block of nr output vectors, for each pass of segments (taps) and reduction rows sized so the
// pass's weight panel stays in L1, the IGEMM tiles of mr rows.
#pragma once
#include "../ukernels/igemm.hpp"
#include "internal.hpp"

namespace et {

struct ChunkPasses {
    int groups = 1;
    const NrBlocks* blocks = nullptr;  // output vectors of a group, cut into blocks
    const float* panels = nullptr;     // [g][block][tap][red][nr*VW] (pack.cpp)
    i64 panel_group = 0;               // floats of one group's panels
    i64 panel_rows = 0;                // rows of one block's panel (taps x red)
    int red = 0;                       // reduction rows per segment (channels)
    int nseg = 0;                      // segments of the chunk
    const int* seg_tap = nullptr;      // the tap of each segment (null: segment s is tap s)
    int seg_step = 1, red_step = 1;    // segments and rows per pass
    const float* const* ptr = nullptr; // ptr[s * lda + i]: row i's input row base in segment s
    i64 lda = 0;
    i64 a_group = 0;                   // input offset of a group's channels
    float* out = nullptr;              // rows of ldc floats; a group's outputs start at g * out_group
    i64 ldc = 0, out_group = 0;
    const float* init = nullptr;       // start values per group row (bias: g * out_group); null: zeros
};

// Runs the passes over `rows` rows (the last tile may run past them into padding rows).
inline void run_chunk_passes(const ChunkPasses& P, i64 rows, std::vector<const float*>& wseg) {
    static const float zeros[kMaxNR * 16] = {};
    wseg.resize((size_t)std::max(P.nseg, 1));
    for (int g = 0; g < P.groups; g++)
        for (int b = 0; b < P.blocks->n; b++) {
            const int nr = P.blocks->nr[b], mr = tile_mr(nr), nrw = nr * VW, first = P.blocks->first[b] * VW;
            const IgemmFn kern = igemm_kernel(nr);
            const float* panel = P.panels + (size_t)g * P.panel_group + (size_t)first * P.panel_rows;
            for (int s0 = 0; s0 < P.nseg; s0 += P.seg_step)
                for (int r0 = 0; r0 < P.red; r0 += P.red_step) {
                    const int ns = std::min(P.seg_step, P.nseg - s0), kc = std::min(P.red_step, P.red - r0);
                    for (int s = 0; s < ns; s++) {
                        const int tap = P.seg_tap ? P.seg_tap[s0 + s] : s0 + s;
                        wseg[s] = panel + ((size_t)tap * P.red + r0) * nrw;
                    }
                    IgemmArgs A;
                    A.nseg = ns;
                    A.kc = kc;
                    A.lda = P.lda;
                    A.aoff = (i64)g * P.a_group + r0;
                    A.w = wseg.data();
                    A.ldc = P.ldc;
                    A.init = (s0 == 0 && r0 == 0) ? (P.init ? P.init + (size_t)g * P.out_group + first : zeros) : nullptr;
                    for (i64 i0 = 0; i0 < rows; i0 += mr) {
                        A.a = P.ptr + (size_t)s0 * P.lda + i0;
                        A.c = P.out + i0 * P.ldc + (size_t)g * P.out_group + first;
                        kern(A);
                    }
                }
        }
}

}  // namespace et
