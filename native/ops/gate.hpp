// Channel gates and channel concatenation on channels-last tensors (the ops of issue 19's
// families that touch every element). Plain C++17 over raw pointers; the Python glue is
// native/ops/bindings.cpp.
#pragma once
#include "../common.hpp"

namespace et {

// Squeeze-and-excitation gate: y[n, q, c] = x[n, q, c] * s[n, c] for the Q pixels of each of
// the N images (x and y: N*Q rows of C).
void gate_mul_forward(const float* x, const float* s, float* y, int N, i64 Q, int C);
// Its backward: dx[n, q, c] = g[n, q, c] * s[n, c] (dx may be null) and
// ds[n, c] = sum over q of g[n, q, c] * x[n, q, c] (ds may be null), summed in double.
void gate_mul_backward(const float* g, const float* x, const float* s, float* dx, float* ds, int N, i64 Q, int C);

// Concatenation along the last axis: parts[i] is P rows of widths[i]; out is P rows of their sum.
void concat_last(const float* const* parts, const int* widths, int nparts, i64 P, float* out);
// Its inverse (the backward of concat_last): g (P rows of the summed width) into parts.
void split_last(const float* g, const int* widths, int nparts, i64 P, float* const* parts);

}  // namespace et
