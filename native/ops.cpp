// Non-GEMM ops that matter for speed, NHWC, threaded: pooling, frozen
// BatchNorm, elementwise add, softmax cross-entropy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <mutex>

#include "common.hpp"
#include "pooled_array.hpp"

namespace py = pybind11;
using namespace et;

namespace et {
std::mutex& kernel_mutex();
}

using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;


static void need_ndim(const py::buffer_info& b, int nd, const char* what) {
    if (b.ndim != nd) throw std::invalid_argument(std::string(what) + ": expected a " + std::to_string(nd) + "-D array, got " + std::to_string(b.ndim) + "-D");
}

static int pool_out(int in, int k, int s, int p0, int p1, bool ceil_mode) {
    int num = in + p0 + p1 - k;
    if (num < 0) throw std::invalid_argument("pool: window larger than the padded input");
    int o = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
    // last window must start inside the input or the left pad (ONNX/torch rule)
    if (ceil_mode && (o - 1) * s >= in + p0) o--;
    return o;
}

struct PoolGeo {
    int N, H, W, C, kh, kw, sh, sw, pt, pl, pb, pr, OH, OW;
};

static PoolGeo pool_geo(const py::buffer_info& b, std::vector<int> k, std::vector<int> s, std::vector<int> pads, bool ceil_mode) {
    need_ndim(b, 4, "pool");
    if (k.size() != 2 || s.size() != 2 || pads.size() != 4) throw std::invalid_argument("pool: kernel/stride need 2 values, pads 4");
    PoolGeo g{(int)b.shape[0], (int)b.shape[1], (int)b.shape[2], (int)b.shape[3], k[0], k[1], s[0], s[1], pads[0], pads[1], pads[2], pads[3], 0, 0};
    if (g.kh <= 0 || g.kw <= 0 || g.sh <= 0 || g.sw <= 0) throw std::invalid_argument("pool: kernel and stride must be positive");
    for (i64 v : {(i64)g.kh, (i64)g.kw, (i64)g.sh, (i64)g.sw, g.pt + i64(1), g.pl + i64(1), g.pb + i64(1), g.pr + i64(1)})
        check_range(v, 1, kMaxGeometry, "pool: a kernel size, stride or pad (+1)");
    for (i64 d : {(i64)b.shape[0], (i64)b.shape[1], (i64)b.shape[2], (i64)b.shape[3]}) check_range(d, 0, kMaxDim, "pool: a dimension");
    g.OH = pool_out(g.H, g.kh, g.sh, g.pt, g.pb, ceil_mode);
    g.OW = pool_out(g.W, g.kw, g.sw, g.pl, g.pr, ceil_mode);
    return g;
}

static py::tuple maxpool_forward(farr x, std::vector<int> k, std::vector<int> s, std::vector<int> pads, bool ceil_mode) {
    auto b = x.request();
    PoolGeo g = pool_geo(b, k, s, pads, ceil_mode);
    farr y = pooled_array<float>({g.N, g.OH, g.OW, g.C});
    py::array_t<int32_t> arg = pooled_array<int32_t>({g.N, g.OH, g.OW, g.C});
    const float* X = x.data();
    float* Y = y.mutable_data();
    int32_t* A = arg.mutable_data();
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
        const i64 P = (i64)g.N * g.OH * g.OW;
#pragma omp parallel for schedule(static)
        for (i64 o = 0; o < P; o++) {
            const int n = int(o / (g.OH * g.OW)), rem = int(o % (g.OH * g.OW)), oh = rem / g.OW, ow = rem % g.OW;
            // the output row is the running max; bitwise ops (no short-circuit) let it vectorise
            float* ET_RESTRICT best = Y + o * g.C;
            int32_t* ET_RESTRICT bi = A + o * g.C;
            for (int c = 0; c < g.C; c++) {
                best[c] = -std::numeric_limits<float>::infinity();
                bi[c] = -1;
            }
            for (int r = 0; r < g.kh; r++) {
                const int ih = oh * g.sh - g.pt + r;
                if (ih < 0 || ih >= g.H) continue;
                for (int q = 0; q < g.kw; q++) {
                    const int iw = ow * g.sw - g.pl + q;
                    if (iw < 0 || iw >= g.W) continue;
                    const int32_t e = ih * g.W + iw;
                    const float* ET_RESTRICT xr = X + (((i64)n * g.H + ih) * g.W + iw) * g.C;
                    int c = 0;
#if defined(__GNUC__) && !defined(__clang__)
                    typedef int32_t vi __attribute__((vector_size(VW * sizeof(int32_t))));
                    for (; c + VW <= g.C; c += VW) {  // random data: selects, not branches
                        const vf v = loadu(xr + c), b = loadu(best + c);
                        vi ix;
                        std::memcpy(&ix, bi + c, sizeof ix);
                        const vi take = (ix < 0) | (v > b) | (v != v);
                        storeu(best + c, take ? v : b);
                        ix = take ? (vi{} + e) : ix;
                        std::memcpy(bi + c, &ix, sizeof ix);
                    }
#endif
                    for (; c < g.C; c++) {
                        const float v = xr[c];
                        const bool take = (bi[c] < 0) | (v > best[c]) | (v != v);  // NaN propagates, first max wins
                        best[c] = take ? v : best[c];
                        bi[c] = take ? e : bi[c];
                    }
                }
            }
        }
    }
    return py::make_tuple(y, arg);
}

static farr maxpool_backward(farr gy, py::array_t<int32_t, py::array::c_style | py::array::forcecast> arg, std::vector<int64_t> in_shape) {
    auto b = gy.request();
    need_ndim(b, 4, "maxpool_backward");
    if (in_shape.size() != 4) throw std::invalid_argument("maxpool_backward: in_shape needs 4 values (N,H,W,C)");
    if (arg.size() != gy.size()) throw std::invalid_argument("maxpool_backward: argmax shape differs from grad shape");
    const int N = (int)in_shape[0], H = (int)in_shape[1], W = (int)in_shape[2], C = (int)in_shape[3];
    const int OHW = int(b.shape[1] * b.shape[2]);
    if (b.shape[0] != N || b.shape[3] != C) throw std::invalid_argument("maxpool_backward: shape mismatch");
    farr gx = pooled_array<float>({N, H, W, C});
    float* GX = gx.mutable_data();
    const float* GY = gy.data();
    const int32_t* A = arg.data();
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
        // zeroing fused into the parallel per-image loop (first touch of the
        // fresh output happens on both cores, right before the scatter)
        const i64 img = (i64)H * W * C;
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float* ET_RESTRICT gx = GX + (i64)n * img;
            std::memset(gx, 0, sizeof(float) * (size_t)img);
            const float* ET_RESTRICT gy = GY + (i64)n * OHW * C;
            const int32_t* ET_RESTRICT an = A + (i64)n * OHW * C;
            for (int o = 0; o < OHW; o++) {
                const float* gyr = gy + (i64)o * C;
                const int32_t* ar = an + (i64)o * C;
                for (int c = 0; c < C; c++) {
                    const int32_t a = ar[c];
                    if (a >= 0) gx[(i64)a * C + c] += gyr[c];
                }
            }
        }
    }
    return gx;
}

static farr avgpool_forward(farr x, std::vector<int> k, std::vector<int> s, std::vector<int> pads, bool ceil_mode, bool count_include_pad) {
    auto b = x.request();
    PoolGeo g = pool_geo(b, k, s, pads, ceil_mode);
    farr y = pooled_array<float>({g.N, g.OH, g.OW, g.C});
    const float* X = x.data();
    float* Y = y.mutable_data();
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
        const i64 P = (i64)g.N * g.OH * g.OW;
#pragma omp parallel for schedule(static)
        for (i64 o = 0; o < P; o++) {
            const int n = int(o / (g.OH * g.OW)), rem = int(o % (g.OH * g.OW)), oh = rem / g.OW, ow = rem % g.OW;
            float* yr = Y + o * g.C;
            for (int c = 0; c < g.C; c++) yr[c] = 0.f;
            int cnt = 0, cntp = 0;
            for (int r = 0; r < g.kh; r++) {
                const int ih = oh * g.sh - g.pt + r;
                if (ih >= g.H + g.pb) continue;
                for (int q = 0; q < g.kw; q++) {
                    const int iw = ow * g.sw - g.pl + q;
                    if (iw >= g.W + g.pr) continue;
                    cntp++;
                    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                    cnt++;
                    const float* xr = X + (((i64)n * g.H + ih) * g.W + iw) * g.C;
                    for (int c = 0; c < g.C; c++) yr[c] += xr[c];
                }
            }
            const float inv = 1.f / float(count_include_pad ? cntp : std::max(cnt, 1));
            for (int c = 0; c < g.C; c++) yr[c] *= inv;
        }
    }
    return y;
}

static farr avgpool_backward(farr gy, std::vector<int64_t> in_shape, std::vector<int> k, std::vector<int> s, std::vector<int> pads, bool ceil_mode, bool count_include_pad) {
    if (in_shape.size() != 4) throw std::invalid_argument("avgpool_backward: in_shape needs 4 values (N,H,W,C)");
    auto b = gy.request();
    need_ndim(b, 4, "avgpool_backward");
    const int N = (int)in_shape[0], H = (int)in_shape[1], W = (int)in_shape[2], C = (int)in_shape[3];
    PoolGeo g{N, H, W, C, k.at(0), k.at(1), s.at(0), s.at(1), pads.at(0), pads.at(1), pads.at(2), pads.at(3), 0, 0};
    g.OH = pool_out(H, g.kh, g.sh, g.pt, g.pb, ceil_mode);
    g.OW = pool_out(W, g.kw, g.sw, g.pl, g.pr, ceil_mode);
    if (b.shape[0] != N || b.shape[1] != g.OH || b.shape[2] != g.OW || b.shape[3] != C)
        throw std::invalid_argument("avgpool_backward: grad shape does not match the pooling geometry");
    farr gx = pooled_array<float>({N, H, W, C});
    float* GX = gx.mutable_data();
    const float* GY = gy.data();
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
        std::memset(GX, 0, sizeof(float) * (size_t)N * H * W * C);
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++)
            for (int oh = 0; oh < g.OH; oh++)
                for (int ow = 0; ow < g.OW; ow++) {
                    int cnt = 0, cntp = 0;
                    for (int r = 0; r < g.kh; r++) {
                        const int ih = oh * g.sh - g.pt + r;
                        if (ih >= H + g.pb) continue;
                        for (int q = 0; q < g.kw; q++) {
                            const int iw = ow * g.sw - g.pl + q;
                            if (iw >= W + g.pr) continue;
                            cntp++;
                            if (ih >= 0 && ih < H && iw >= 0 && iw < W) cnt++;
                        }
                    }
                    const float inv = 1.f / float(count_include_pad ? cntp : std::max(cnt, 1));
                    const float* gr = GY + (((i64)n * g.OH + oh) * g.OW + ow) * C;
                    for (int r = 0; r < g.kh; r++) {
                        const int ih = oh * g.sh - g.pt + r;
                        if (ih < 0 || ih >= H) continue;
                        for (int q = 0; q < g.kw; q++) {
                            const int iw = ow * g.sw - g.pl + q;
                            if (iw < 0 || iw >= W) continue;
                            float* xr = GX + (((i64)n * H + ih) * W + iw) * C;
                            for (int c = 0; c < C; c++) xr[c] += gr[c] * inv;
                        }
                    }
                }
    }
    return gx;
}

static farr global_avgpool_forward(farr x) {
    auto b = x.request();
    need_ndim(b, 4, "global_avgpool");
    const int N = (int)b.shape[0], HW = int(b.shape[1] * b.shape[2]), C = (int)b.shape[3];
    farr y({N, C});
    const float* X = x.data();
    float* Y = y.mutable_data();
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            std::vector<double> acc(C, 0.0);
            for (int q = 0; q < HW; q++) {
                const float* xr = X + ((i64)n * HW + q) * C;
                for (int c = 0; c < C; c++) acc[c] += xr[c];
            }
            for (int c = 0; c < C; c++) Y[(i64)n * C + c] = float(acc[c] / HW);
        }
    }
    return y;
}

static farr global_avgpool_backward(farr gy, std::vector<int64_t> in_shape) {
    if (in_shape.size() != 4) throw std::invalid_argument("global_avgpool_backward: in_shape needs 4 values");
    const int N = (int)in_shape[0], H = (int)in_shape[1], W = (int)in_shape[2], C = (int)in_shape[3];
    if (gy.ndim() != 2 || gy.shape(0) != N || gy.shape(1) != C) throw std::invalid_argument("global_avgpool_backward: grad must be (N, C)");
    farr gx = pooled_array<float>({N, H, W, C});
    float* GX = gx.mutable_data();
    const float* GY = gy.data();
    const float inv = 1.f / float(H * W);
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
#pragma omp parallel for schedule(static)
        for (i64 p = 0; p < (i64)N * H * W; p++) {
            const float* g = GY + (p / (H * W)) * C;
            for (int c = 0; c < C; c++) GX[p * C + c] = g[c] * inv;
        }
    }
    return gx;
}

static void bn_coeffs(int C, const float* gamma, const float* beta, const float* mean, const float* var, float eps,
                      std::vector<float>& scale, std::vector<float>& shift, std::vector<float>& invstd) {
    scale.resize(C); shift.resize(C); invstd.resize(C);
    for (int c = 0; c < C; c++) {
        invstd[c] = 1.f / std::sqrt(var[c] + eps);
        scale[c] = gamma[c] * invstd[c];
        shift[c] = beta[c] - mean[c] * scale[c];
    }
}

static void check_vec(const farr& a, int C, const char* what) {
    if (a.ndim() != 1 || a.shape(0) != C) throw std::invalid_argument(std::string("batchnorm: ") + what + " must have shape (C,)");
}

static farr bn_forward(farr x, farr gamma, farr beta, farr mean, farr var, float eps) {
    if (x.ndim() < 2) throw std::invalid_argument("batchnorm: x must be channels-last with ndim >= 2");
    const int C = (int)x.shape(x.ndim() - 1);
    check_vec(gamma, C, "gamma"); check_vec(beta, C, "beta"); check_vec(mean, C, "mean"); check_vec(var, C, "var");
    std::vector<float> sc, sh, is;
    bn_coeffs(C, gamma.data(), beta.data(), mean.data(), var.data(), eps, sc, sh, is);
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    farr y = pooled_array<float>(shape);
    const float* X = x.data();
    float* Y = y.mutable_data();
    const i64 P = x.size() / C;
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
#pragma omp parallel for schedule(static)
        for (i64 p = 0; p < P; p++)
            for (int c = 0; c < C; c++) Y[p * C + c] = X[p * C + c] * sc[c] + sh[c];
    }
    return y;
}

static py::tuple bn_backward(farr gy, farr x, farr gamma, farr mean, farr var, float eps) {
    if (gy.size() != x.size() || x.ndim() < 2) throw std::invalid_argument("batchnorm_backward: grad and x shapes differ");
    const int C = (int)x.shape(x.ndim() - 1);
    check_vec(gamma, C, "gamma"); check_vec(mean, C, "mean"); check_vec(var, C, "var");
    std::vector<float> beta0(C, 0.f), sc, sh, is;
    bn_coeffs(C, gamma.data(), beta0.data(), mean.data(), var.data(), eps, sc, sh, is);
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    farr gx = pooled_array<float>(shape), dg(std::vector<py::ssize_t>{C}), dbt(std::vector<py::ssize_t>{C});
    const float *GY = gy.data(), *X = x.data(), *M = mean.data();
    float* GX = gx.mutable_data();
    const i64 P = x.size() / C;
    std::vector<double> sg(C, 0.0), sb(C, 0.0);
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
#pragma omp parallel
        {
            std::vector<double> lg(C, 0.0), lb(C, 0.0);
#pragma omp for schedule(static)
            for (i64 p = 0; p < P; p++)
                for (int c = 0; c < C; c++) {
                    const float g = GY[p * C + c];
                    GX[p * C + c] = g * sc[c];
                    lg[c] += (double)g * ((X[p * C + c] - M[c]) * is[c]);
                    lb[c] += g;
                }
#pragma omp critical
            for (int c = 0; c < C; c++) { sg[c] += lg[c]; sb[c] += lb[c]; }
        }
    }
    for (int c = 0; c < C; c++) { dg.mutable_data()[c] = (float)sg[c]; dbt.mutable_data()[c] = (float)sb[c]; }
    return py::make_tuple(gx, dg, dbt);
}

static farr add_forward(farr a, farr b) {
    if (a.ndim() != b.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), b.shape()))
        throw std::invalid_argument("add: shapes differ (no broadcasting)");
    std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
    farr y = pooled_array<float>(shape);
    const float *A = a.data(), *B = b.data();
    float* Y = y.mutable_data();
    const i64 n = a.size();
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
#pragma omp parallel for schedule(static)
        for (i64 i = 0; i < n; i++) Y[i] = A[i] + B[i];
    }
    return y;
}

static py::tuple softmax_ce(farr logits, py::array_t<int64_t, py::array::c_style | py::array::forcecast> labels) {
    if (logits.ndim() != 2) throw std::invalid_argument("softmax_cross_entropy: logits must be (N, classes)");
    const int N = (int)logits.shape(0), M = (int)logits.shape(1);
    if (labels.ndim() != 1 || labels.shape(0) != N) throw std::invalid_argument("softmax_cross_entropy: labels must be (N,)");
    const int64_t* Lb = labels.data();
    for (int n = 0; n < N; n++)
        if (Lb[n] < 0 || Lb[n] >= M) throw std::invalid_argument("softmax_cross_entropy: label " + std::to_string(Lb[n]) + " out of range [0, " + std::to_string(M) + ")");
    farr grad({N, M});
    const float* X = logits.data();
    float* G = grad.mutable_data();
    double loss = 0.0;
    {
        py::gil_scoped_release rel;
        std::lock_guard<std::mutex> lk(kernel_mutex());
#pragma omp parallel for schedule(static) reduction(+ : loss)
        for (int n = 0; n < N; n++) {
            const float* x = X + (i64)n * M;
            float mx = x[0];
            for (int j = 1; j < M; j++) mx = std::max(mx, x[j]);
            double se = 0.0;
            for (int j = 0; j < M; j++) se += std::exp((double)x[j] - mx);
            const double lse = mx + std::log(se);
            loss += lse - x[Lb[n]];
            for (int j = 0; j < M; j++)
                G[(i64)n * M + j] = float((std::exp((double)x[j] - lse) - (j == Lb[n] ? 1.0 : 0.0)) / N);
        }
    }
    return py::make_tuple(loss / std::max(N, 1), grad);
}

void register_ops(py::module_& m) {
    m.def("maxpool_forward", &maxpool_forward, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("pads") = std::vector<int>{0, 0, 0, 0}, py::arg("ceil_mode") = false,
          "Max pool NHWC -> (y, argmax); argmax holds ih*W+iw of the chosen input (first max).");
    m.def("maxpool_backward", &maxpool_backward, py::arg("grad_y"), py::arg("argmax"), py::arg("in_shape"),
          "Route grad_y to the argmax positions; returns grad_x (N,H,W,C).");
    m.def("avgpool_forward", &avgpool_forward, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("pads") = std::vector<int>{0, 0, 0, 0}, py::arg("ceil_mode") = false,
          py::arg("count_include_pad") = false, "Average pool NHWC.");
    m.def("avgpool_backward", &avgpool_backward, py::arg("grad_y"), py::arg("in_shape"), py::arg("kernel"), py::arg("stride"),
          py::arg("pads") = std::vector<int>{0, 0, 0, 0}, py::arg("ceil_mode") = false, py::arg("count_include_pad") = false, "Backward of avgpool_forward.");
    m.def("global_avgpool_forward", &global_avgpool_forward, py::arg("x"), "Mean over H and W: (N,H,W,C) -> (N,C).");
    m.def("global_avgpool_backward", &global_avgpool_backward, py::arg("grad_y"), py::arg("in_shape"), "Backward of global_avgpool_forward.");
    m.def("batchnorm_forward", &bn_forward, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("mean"), py::arg("var"), py::arg("eps") = 1e-5f,
          "Frozen-statistics BatchNorm over the last (channel) axis.");
    m.def("batchnorm_backward", &bn_backward, py::arg("grad_y"), py::arg("x"), py::arg("gamma"), py::arg("mean"), py::arg("var"), py::arg("eps") = 1e-5f,
          "Backward of frozen BatchNorm -> (grad_x, dgamma, dbeta).");
    m.def("add", &add_forward, py::arg("a"), py::arg("b"), "Elementwise a + b (same shapes).");
    m.def("softmax_cross_entropy", &softmax_ce, py::arg("logits"), py::arg("labels"),
          "Mean softmax cross-entropy over the batch -> (loss, dL/dlogits).");
}
