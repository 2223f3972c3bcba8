// Weight packing for the kernels (FP rows over K, BP rows over C, the tiled kernels' panels)
// and the packed weight gradient back to OIHW.
#include "../ukernels/tiles.hpp"
#include "internal.hpp"

namespace et {

void ConvLayer::set_weights(const float* w, const float* b) {
    const int RS = R * S;
    if (depthwise) {
        const int Cpad = round_up(C, VW);
        Wf.reset((size_t)RS * Cpad, true);
        for (int c = 0; c < C; c++)
            for (int rs = 0; rs < RS; rs++) Wf[(size_t)rs * Cpad + c] = w[(size_t)c * RS + rs];
        bias.reset(Cpad, true);
    } else {
        // sizes never change for a layer: allocate (zeroed padding) once, then overwrite
        if (Wf.size() != (size_t)groups * RS * Cg * Kp) Wf.reset((size_t)groups * RS * Cg * Kp, true);
        if (Wb.size() != (size_t)groups * RS * Kg * Cp) Wb.reset((size_t)groups * RS * Kg * Cp, true);
        if (bias.size() != (size_t)KpAll) bias.reset((size_t)KpAll, true);
        std::memset(bias.data(), 0, sizeof(float) * KpAll);
        // blocked transposes, parallel over (g, r, s, 64x64 blocks)
        constexpr int TB = 64;
        const int nkb = (Kg + TB - 1) / TB, ncb = (Cg + TB - 1) / TB;
        const i64 nblk = (i64)groups * RS * nkb * ncb;
        float* wf = Wf.data();
        float* wb = Wb.data();
        parallel_each(nblk, [&](i64 bi) {
            const int cbk = int(bi % ncb), kbk = int((bi / ncb) % nkb), rs = int((bi / ncb / nkb) % RS),
                      g = int(bi / ncb / nkb / RS);
            const int k0 = kbk * TB, k1 = std::min(Kg, k0 + TB), c0 = cbk * TB, c1 = std::min(Cg, c0 + TB);
            for (int kk = k0; kk < k1; kk++) {
                const float* src = w + (((size_t)(g * Kg + kk)) * Cg) * RS + rs;
                float* db = wb + (((size_t)g * RS + rs) * Kg + kk) * Cp;
                for (int cl = c0; cl < c1; cl++) db[cl] = src[(size_t)cl * RS];
            }
            for (int cl = c0; cl < c1; cl++) {
                float* df = wf + (((size_t)g * RS + rs) * Cg + cl) * Kp;
                const float* src = w + ((size_t)g * Kg * Cg + cl) * RS + rs;
                for (int kk = k0; kk < k1; kk++) df[kk] = src[(size_t)kk * Cg * RS];
            }
        }, 1);
    }
    if (!depthwise) pack_tiles(w);
    has_bias = b != nullptr;
    if (b) {
        for (int k = 0; k < K; k++) {
            if (depthwise) bias[k] = b[k];
            else bias[(size_t)(k / Kg) * Kp + k % Kg] = b[k];
        }
    }
    has_w = true;
}
// Panels of the tiled kernels: FP block (g, b) holds rows (t, c) of its nr output vectors, BP
// block (g, b) rows (t, k) of its nr input-channel vectors; padding lanes are zero.
void ConvLayer::pack_tiles(const float* w) {
    const int RS = R * S;
    if (Wt.size() != (size_t)groups * RS * Cg * Kp) Wt.reset((size_t)groups * RS * Cg * Kp, true);
    if (Wbt.size() != (size_t)groups * RS * Kg * Cp) Wbt.reset((size_t)groups * RS * Kg * Cp, true);
    const NrBlocks kb(Kp / VW), cb(Cp / VW);
    float* wt = Wt.data();
    float* wbt = Wbt.data();
    // FP: items (g, block, tap)
    parallel_each((i64)groups * kb.n * RS, [&](i64 it) {
        const int t = int(it % RS), b = int(it / RS % kb.n), g = int(it / RS / kb.n);
        const int nrw = kb.nr[b] * VW, k0 = kb.first[b] * VW;
        float* panel = wt + (size_t)g * RS * Cg * Kp + (size_t)k0 * RS * Cg;
        for (int c = 0; c < Cg; c++) {
            float* row = panel + ((size_t)t * Cg + c) * nrw;
            for (int j = 0; j < nrw; j++) {
                const int k = k0 + j;
                row[j] = k < Kg ? w[(((size_t)(g * Kg + k)) * Cg + c) * RS + t] : 0.f;
            }
        }
    }, 1);
    // BP: items (g, block, tap)
    parallel_each((i64)groups * cb.n * RS, [&](i64 it) {
        const int t = int(it % RS), b = int(it / RS % cb.n), g = int(it / RS / cb.n);
        const int nrw = cb.nr[b] * VW, c0 = cb.first[b] * VW;
        float* panel = wbt + (size_t)g * RS * Kg * Cp + (size_t)c0 * RS * Kg;
        for (int k = 0; k < Kg; k++) {
            float* row = panel + ((size_t)t * Kg + k) * nrw;
            for (int j = 0; j < nrw; j++) {
                const int c = c0 + j;
                row[j] = c < Cg ? w[(((size_t)(g * Kg + k)) * Cg + c) * RS + t] : 0.f;
            }
        }
    }, 1);
}

// packed [g][rs][cl][kk] -> OIHW, blocked transpose in parallel
void ConvLayer::store_dw(const float* src, float* dW) const {
    const int RS = R * S;
    constexpr int TB = 64;
    const int nkb = (Kg + TB - 1) / TB, ncb = (Cg + TB - 1) / TB;
    const i64 nblk = (i64)groups * nkb * ncb;
    parallel_each(nblk, [&](i64 bi) {
        const int cbk = int(bi % ncb), kbk = int((bi / ncb) % nkb), g = int(bi / ncb / nkb);
        const int k0 = kbk * TB, k1 = std::min(Kg, k0 + TB), c0 = cbk * TB, c1 = std::min(Cg, c0 + TB);
        for (int kk = k0; kk < k1; kk++)
            for (int cl = c0; cl < c1; cl++)
                for (int rs = 0; rs < RS; rs++)
                    dW[(((size_t)(g * Kg + kk)) * Cg + cl) * RS + rs] =
                        src[(((size_t)g * RS + rs) * Cg + cl) * Kp + kk];
    }, 1);
}

}  // namespace et
