// Register tiles of the micro-kernels, by ISA (chosen at compile time, like VW).
//
// A tile is MR rows (pixels for FP/BP, input channels for WG) by NR vectors of VW floats (output
// channels): MR*NR accumulators, NR weight vectors and one broadcast must fit the vector
// registers (32 on AVX-512 and NEON, 16 on AVX2/SSE), and MR row pointers the general ones.
// Measured on a 3x3 conv, 64->64, 16x16, batch 32, one Zen 4 core: AVX-512 6x4 54 GMAC/s,
// 8x2 52, 12x2 48 (its 12 row pointers spill); AVX2 6x2 53.
#pragma once
#include <vector>

#include "../common.hpp"

namespace et {

#if defined(__AVX512F__) || defined(__aarch64__) || defined(__ARM_NEON)
constexpr int kVecRegs = 32;
#else
constexpr int kVecRegs = 16;
#endif

// widest tile in vectors, and the rows of a tile of nr vectors
constexpr int kMaxNR = kVecRegs >= 32 ? 4 : 2;
constexpr int tile_mr(int nr) {
    return kVecRegs >= 32 ? (nr == 1 ? 12 : nr == 2 ? 8 : nr == 3 ? 8 : 6) : (nr == 1 ? 8 : nr == 2 ? 6 : 4);
}
constexpr int kMaxMR = tile_mr(1);

// The output channels (nv vectors) of one group cut into blocks of at most kMaxNR vectors, as even
// as possible (5 -> 3 + 2, 6 -> 3 + 3): block i starts at vector first[i] and has nr[i] vectors.
// As many blocks as the channels need: a fixed 64 silently left every channel past
// 64 * kMaxNR * VW uncomputed (513+ on 4-float SSE2, 1025+ on AVX2).
struct NrBlocks {
    int n = 0;
    std::vector<int> first, nr;
    explicit NrBlocks(int nv) {
        const int nb = (nv + kMaxNR - 1) / kMaxNR;
        first.resize(nb);
        nr.resize(nb);
        int v = 0;
        for (int b = 0; b < nb; b++) {
            const int take = (nv - v + (nb - b) - 1) / (nb - b);
            first[b] = v;
            nr[b] = take;
            v += take;
        }
        n = nb;
    }
};

}  // namespace et
