// Weight packing for the kernels (FP rows over K, BP rows over C, the tiled kernels' panels)
// and the packed weight gradient back to OIHW.
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
    has_bias = b != nullptr;
    if (b) {
        for (int k = 0; k < K; k++) {
            if (depthwise) bias[k] = b[k];
            else bias[(size_t)(k / Kg) * Kp + k % Kg] = b[k];
        }
    }
    has_w = true;
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
