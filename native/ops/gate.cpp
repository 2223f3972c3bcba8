// Channel gates (SE blocks) and channel concatenation, channels-last. See gate.hpp.
#include "gate.hpp"

#include <vector>

namespace et {

void gate_mul_forward(const float* x, const float* s, float* y, int N, i64 Q, int C) {
    const i64 rows = (i64)N * Q;
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < rows; r++) {
        const float* ET_RESTRICT xr = x + r * C;
        const float* ET_RESTRICT sr = s + (r / Q) * C;
        float* ET_RESTRICT yr = y + r * C;
        for (int c = 0; c < C; c++) yr[c] = xr[c] * sr[c];
    }
}

void gate_mul_backward(const float* g, const float* x, const float* s, float* dx, float* ds, int N, i64 Q, int C) {
    if (dx) gate_mul_forward(g, s, dx, N, Q, C);   // dx = g * s: the forward's product
    if (!ds) return;
    // one image's sums per task: the order of its additions does not depend on the thread count
#pragma omp parallel
    {
        std::vector<double> acc(C);
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            std::fill(acc.begin(), acc.end(), 0.0);
            for (i64 q = 0; q < Q; q++) {
                const i64 r = (i64)n * Q + q;
                const float* ET_RESTRICT gr = g + r * C;
                const float* ET_RESTRICT xr = x + r * C;
                for (int c = 0; c < C; c++) acc[c] += (double)(gr[c] * xr[c]);
            }
            for (int c = 0; c < C; c++) ds[(i64)n * C + c] = (float)acc[c];
        }
    }
}

void concat_last(const float* const* parts, const int* widths, int nparts, i64 P, float* out) {
    int total = 0;
    for (int i = 0; i < nparts; i++) total += widths[i];
#pragma omp parallel for schedule(static)
    for (i64 p = 0; p < P; p++) {
        float* o = out + p * total;
        for (int i = 0; i < nparts; i++) {
            std::memcpy(o, parts[i] + p * widths[i], sizeof(float) * (size_t)widths[i]);
            o += widths[i];
        }
    }
}

void split_last(const float* g, const int* widths, int nparts, i64 P, float* const* parts) {
    int total = 0;
    for (int i = 0; i < nparts; i++) total += widths[i];
#pragma omp parallel for schedule(static)
    for (i64 p = 0; p < P; p++) {
        const float* src = g + p * total;
        for (int i = 0; i < nparts; i++) {
            if (parts[i]) std::memcpy(parts[i] + p * widths[i], src, sizeof(float) * (size_t)widths[i]);
            src += widths[i];
        }
    }
}

}  // namespace et
