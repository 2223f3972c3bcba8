// pybind11 entry point of edgetune._native. Kernels live in their own files.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <mutex>

#include "conv.hpp"
#include "conv/internal.hpp"
#include "cpu.hpp"
#include "pooled_array.hpp"

namespace py = pybind11;
using namespace et;

int edgetune_num_threads();
void register_ops(py::module_& m);
void register_op_kernels(py::module_& m);  // native/ops/bindings.cpp

namespace et {
// One kernel at a time: per-thread scratch pools are shared.
std::mutex& kernel_mutex() {
    static std::mutex m;
    return m;
}
}  // namespace et

using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace {

struct Guard {  // release the GIL, take the kernel lock
    py::gil_scoped_release rel;
    std::lock_guard<std::mutex> lk{kernel_mutex()};
};


// N, H, W, C of an NHWC (4-D) or (N, F) (2-D) array, each checked against the kernels' limits
// (common.hpp), so no size a caller passes can overflow an index or an allocation.
std::array<int, 4> nhwc_dims(const farr& x, const char* who) {
    if (x.ndim() != 4 && x.ndim() != 2) throw std::invalid_argument(std::string(who) + ": x must be NHWC (4-D) or (N, F) (2-D)");
    std::array<i64, 4> d{x.shape(0), 1, 1, x.shape(x.ndim() - 1)};
    if (x.ndim() == 4) { d[1] = x.shape(1); d[2] = x.shape(2); }
    const char* names[4] = {"batch", "height", "width", "channels"};
    for (int i = 0; i < 4; i++) check_range(d[i], i == 0 ? 0 : 1, kMaxDim, std::string(who) + ": " + names[i]);
    check_range(d[0] * d[1] * d[2] * d[3], 0, kMaxElems, std::string(who) + ": elements");
    return {int(d[0]), int(d[1]), int(d[2]), int(d[3])};
}

InfoPtr analyze(farr x, bool dense, double min_sparsity) {
    const auto [N, H, W, C] = nhwc_dims(x, "analyze_input");
    const float* p = x.data();
    Guard g;
    if (!dense && min_sparsity > 0.0) {  // too few zeros to be worth listing: dense mode
        const i64 n = x.size();
        std::vector<i64> zeros((size_t)std::max(1, pool_threads()), 0);
        parallel_for(n, 1 << 16, [&](i64 b, i64 e, int t) {
            i64 z = 0;
            for (i64 i = b; i < e; i++) z += p[i] == 0.f;
            zeros[(size_t)t] += z;
        });
        i64 nz = 0;
        for (i64 z : zeros) nz += z;
        dense = double(nz) < min_sparsity * double(n);
    }
    return activate_rows(p, nullptr, N, H, W, C, ACT_INPUT, 0.f, 0.f, 0.f, dense);
}

py::dict counts_dict(const Counts& c) {
    py::dict d;
    d["dense"] = c.dense;
    d["required"] = c.required;
    d["executed"] = c.executed;
    return d;
}

py::array_t<float> decompress(ActInfo& I) {
    auto a = pooled_array<float>({I.N, I.H, I.W, I.C});
    float* o = a.mutable_data();
    Guard g;
    const float* d = I.dense_values();
    std::memcpy(o, d, sizeof(float) * I.P * I.C);
    return a;
}

py::array_t<bool> mask_a(ActInfo& I) {
    auto a = pooled_array<bool>({I.N, I.H, I.W, I.C});
    bool* o = a.mutable_data();
    Guard g;
    const float* d = I.dense_values();
    for (i64 e = 0; e < I.P * I.C; e++) o[e] = I.a_constrained ? d[e] != 0.f : true;
    return a;
}

py::array_t<bool> mask_g(ActInfo& I) {
    auto a = pooled_array<bool>({I.N, I.H, I.W, I.C});
    bool* o = a.mutable_data();
    for (i64 e = 0; e < I.P * I.C; e++) o[e] = I.in_g_state(I.state(e));
    return a;
}

py::array_t<uint8_t> states(ActInfo& I) {
    auto a = pooled_array<uint8_t>({I.N, I.H, I.W, I.C});
    uint8_t* o = a.mutable_data();
    for (i64 e = 0; e < I.P * I.C; e++) o[e] = (uint8_t)I.state(e);
    return a;
}

py::tuple lists(ActInfo& I, bool g) {
    const bool all = g ? I.g_all : I.a_all;
    const i64 P = I.P;
    const int C = I.C;
    auto ptr = pooled_array<int64_t>({P + 1});
    int64_t* pp = ptr.mutable_data();
    if (all) {
        auto idx = pooled_array<int32_t>({P * C});
        for (i64 p = 0; p <= P; p++) pp[p] = p * C;
        for (i64 e = 0; e < P * C; e++) idx.mutable_data()[e] = int32_t(e % C);
        return py::make_tuple(ptr, idx);
    }
    const i64* sp = (g && !I.g_same) ? I.g_ptr.data() : I.a_ptr.data();
    std::memcpy(pp, sp, sizeof(int64_t) * (P + 1));
    auto idx = pooled_array<int32_t>({sp[P] + 8});  // + slack: rows are decoded 8 channels at a time
    if (I.derived) {
        for (i64 p = 0; p < P; p++) decode_row(I, g && !I.g_same ? 1 : 0, p, 0, C, idx.mutable_data() + sp[p]);
    } else {
        const i32* si = (g && !I.g_same) ? I.g_idx.data() : I.a_idx.data();
        std::memcpy(idx.mutable_data(), si, sizeof(int32_t) * sp[P]);
    }
    return py::make_tuple(ptr, idx[py::slice(0, sp[P], 1)]);
}

// The stored values (what FP keeps), aligned with the A lists: a, except
// hard-swish where curved elements hold z and identity elements hold a (= z).
py::array_t<float> packed_values(ActInfo& I) {
    auto a = pooled_array<float>({I.nvals});
    std::memcpy(a.mutable_data(), I.vals.data(), sizeof(float) * I.nvals);
    return a;
}

py::array_t<float> grad_z(ActInfo& I, farr grad_a) {
    if (grad_a.size() != I.P * I.C) throw std::invalid_argument("grad_z: grad_a size does not match the activation");
    auto d = pooled_array<float>({I.N, I.H, I.W, I.C});
    float* o = d.mutable_data();
    const float* ga = grad_a.data();
    Guard g;
    grad_z_dense(I, ga, o);
    return d;
}

// ----------------------------------------------------------------- layers
struct PyConv {
    std::unique_ptr<ConvLayer> L;
    bool gemm = false;
    int in_rank = 4;

    InfoPtr to_info(py::object x, bool dense) {
        if (py::isinstance<ActInfo>(x)) return x.cast<InfoPtr>();
        farr a = farr::ensure(x);
        if (!a) throw std::invalid_argument("forward: x must be a float32 array or a SparseInfo");
        if (gemm && a.ndim() != 2) throw std::invalid_argument("GemmLayer.forward: x must be (N, in_features)");
        if (!gemm && a.ndim() != 4) throw std::invalid_argument("ConvLayer.forward: x must be NHWC (N, H, W, C)");
        return analyze(a, dense, 0.0);
    }

    py::object x_keep;  // keeps the dense input copy alive during forward

    py::tuple forward(py::object x, bool dense, bool want_a, bool out_dense, py::object x_dense, bool keep_values) {
        InfoPtr xi = to_info(x, dense);
        x_keep = py::none();
        L->x_dense = nullptr;
        if (!x_dense.is_none()) {
            farr xd = farr::ensure(x_dense);
            if (!xd || xd.size() != xi->P * (i64)xi->C)
                throw std::invalid_argument("forward: x_dense must be a float32 array with the input's N*H*W*C elements");
            x_keep = xd;
            L->x_dense = xd.data();
        }
        if (gemm && (xi->H != 1 || xi->W != 1)) {
            Guard g;
            xi = flatten_info(xi);
        }
        int OH, OW;
        L->out_shape(xi->H, xi->W, OH, OW);
        py::object a = py::none();
        float* ap = nullptr;
        if (want_a) {
            py::array_t<float> arr = gemm ? pooled_array<float>({xi->N, L->K}) : pooled_array<float>({xi->N, OH, OW, L->K});
            ap = arr.mutable_data();
            a = arr;
        }
        InfoPtr o;
        {
            Guard g;
            o = L->forward(xi, dense, ap, out_dense, keep_values);
        }
        L->x_dense = nullptr;  // FP only: BP must not keep the caller's array alive
        x_keep = py::none();
        return py::make_tuple(a, o);
    }

    py::tuple backward(farr grad_a, bool need_input_grad, py::object prev_info, bool mask_input_grad, bool need_weight_grad) {
        if (!L->out) throw std::runtime_error("backward called before forward");
        const ActInfo& O = *L->out;
        if (grad_a.size() != O.P * O.C) throw std::invalid_argument("backward: grad_a must have the forward output's shape");
        const ActInfo* pg = nullptr;
        InfoPtr keep;
        if (need_input_grad && mask_input_grad) {
            if (!prev_info.is_none()) keep = prev_info.cast<InfoPtr>();
            else keep = L->in;
            if (keep && gemm && (keep->H != 1 || keep->W != 1)) { Guard g; keep = flatten_info(keep); }
            pg = keep.get();
        }
        if (pg && (pg->N != L->in->N || (i64)pg->H * pg->W * pg->C != (i64)L->in->H * L->in->W * L->in->C))
            throw std::invalid_argument("backward: prev_info shape does not match the layer input");
        py::object gin = py::none(), dW = py::none(), db = py::none();
        float *gp = nullptr, *wp = nullptr, *bp = nullptr;
        const ActInfo& I = *L->in;
        if (need_input_grad) {
            auto a = gemm ? pooled_array<float>({I.N, I.C}) : pooled_array<float>({I.N, I.H, I.W, I.C});
            gp = a.mutable_data();
            gin = a;
        }
        if (need_weight_grad) {
            auto w = gemm ? pooled_array<float>({L->K, L->C}) : pooled_array<float>({L->K, L->Cg, L->R, L->S});
            auto b = pooled_array<float>({L->K});
            wp = w.mutable_data();
            bp = b.mutable_data();
            dW = w;
            db = b;
        }
        const float* ga = grad_a.data();
        {
            Guard g;
            L->backward(ga, gp, pg, wp, bp);
        }
        return py::make_tuple(gin, dW, db);
    }

    void set_weights(farr w, py::object b) {
        const std::vector<py::ssize_t> want = gemm ? std::vector<py::ssize_t>{L->K, L->C}
                                                   : std::vector<py::ssize_t>{L->K, L->Cg, L->R, L->S};
        if ((size_t)w.ndim() != want.size() || !std::equal(want.begin(), want.end(), w.shape())) {
            std::string s = "(";
            for (auto v : want) s += std::to_string(v) + ",";
            throw std::invalid_argument("set_weights: weight must have shape " + s + ")");
        }
        farr bb;
        const float* bp = nullptr;
        if (!b.is_none()) {
            bb = farr::ensure(b);
            if (!bb || bb.ndim() != 1 || bb.shape(0) != L->K) throw std::invalid_argument("set_weights: bias must have shape (out_channels,)");
            bp = bb.data();
        }
        const float* wp = w.data();
        Guard g;
        L->set_weights(wp, bp);
    }

    py::dict phase_ms() const {
        py::dict d;
        d["fp"] = L->ms_fp;
        d["bp"] = L->ms_bp;
        d["wg"] = L->ms_wg;
        return d;
    }

    py::dict phase_cpu_ms() const {
        py::dict d;
        d["fp"] = L->cpu_fp;
        d["bp"] = L->cpu_bp;
        d["wg"] = L->cpu_wg;
        return d;
    }

    py::dict counters(bool total) const {
        py::dict d;
        d["fp"] = counts_dict(total ? L->tfp : L->cfp);
        d["bp"] = counts_dict(total ? L->tbp : L->cbp);
        d["wg"] = counts_dict(total ? L->twg : L->cwg);
        return d;
    }
};

struct PyGemm : PyConv {};

int parse_act(py::object a) {
    if (py::isinstance<py::str>(a)) {
        const std::string s = a.cast<std::string>();
        std::string names;
        for (const ActName& n : kActs) {
            if (s == n.name) return n.id;
            names += std::string(names.empty() ? "" : ", ") + n.name;
        }
        throw std::invalid_argument("unknown activation '" + s + "' (" + names + ")");
    }
    return a.cast<int>();
}

py::dict zero_structure(const ActInfo& I) {
    py::dict d;
    const ZeroStructure& z = I.zero;
    d["measured"] = z.measured;
    d["pixels"] = I.P;
    d["blocks"] = z.blocks;
    d["block_channels"] = VW;
    d["zero_pixels_a"] = z.zero_px_a;
    d["zero_pixels_g"] = z.zero_px_g;
    d["zero_blocks_a"] = z.zero_blk_a;
    d["zero_blocks_g"] = z.zero_blk_g;
    return d;
}

}  // namespace

#ifndef ET_MODULE
#define ET_MODULE _native_native
#define ET_LEVEL "native"
#endif

// Can this CPU run the kernels of `level` (x86-64 levels; other targets have one level)?
static bool cpu_supports(const std::string& level) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (level == "baseline") return true;
    if (level == "avx2") return __builtin_cpu_supports("x86-64-v3");
    if (level == "avx512") return __builtin_cpu_supports("x86-64-v4");
    return level == "native";
#else
    return level == ET_LEVEL || level == "native";
#endif
}

// Every level is its own module with the same C++ types: they are registered module-locally
// so that two levels can be loaded in one process (the baseline module probes the CPU).
// The methods ConvLayer and GemmLayer share (T is PyConv or PyGemm, which adds no members).
template <class T>
void layer_methods(py::class_<T>& c) {
    c.def("set_weights", &PyConv::set_weights, py::arg("W"), py::arg("b") = py::none())
        .def("forward", &PyConv::forward, py::arg("x"), py::arg("dense") = false, py::arg("want_a") = true,
             py::arg("out_dense") = false, py::arg("x_dense") = py::none(), py::arg("keep_values") = true)
        .def("backward", &PyConv::backward, py::arg("grad_a"), py::arg("need_input_grad") = true, py::arg("prev_info") = py::none(),
             py::arg("mask_input_grad") = true, py::arg("need_weight_grad") = true)
        .def("release", [](T& p) { p.L->release(); p.x_keep = py::none(); }, "Drop what the last step kept (its input and output infos).")
        .def("counters", &PyConv::counters, py::arg("total") = false)
        .def("phase_ms", &PyConv::phase_ms, "Wall ms of the last forward ('fp') and backward ('bp', 'wg'; the d prologue is booked to bp when it runs).")
        .def("kernels", [](T& p) {
            py::dict d;
            d["fp"] = p.L->kern_fp;
            d["bp"] = p.L->kern_bp;
            d["wg"] = p.L->kern_wg;
            return d;
        }, "The kernel family each phase of the last call ran: tiled, walk, im2col or depthwise ('' when it did not run).")
        .def("phase_cpu_ms", &PyConv::phase_cpu_ms, "CPU ms of the same phases, summed over the kernels' threads (time the OS gave to other processes does not count).")
        .def("reset_counters", [](T& p) { p.L->cfp = p.L->cbp = p.L->cwg = p.L->tfp = p.L->tbp = p.L->twg = Counts(); })
        .def_property("trainable", [](T& p) { return p.L->trainable; }, [](T& p, bool v) { p.L->trainable = v; })
        .def_property_readonly("input_info", [](T& p) { return p.L->in; })
        .def_property_readonly("output_info", [](T& p) { return p.L->out; });
}

PYBIND11_MODULE(ET_MODULE, m) {
    m.doc() = "edgetune sparse training kernels (private; use edgetune.runtime)";
    m.def("num_threads", &edgetune_num_threads, "Threads the kernels use.");
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1");
        set_pool_threads(n);
    }, py::arg("n"), "Set the number of threads the kernels use (their own pool; OpenMP for the ops that use it).");
    m.def("set_kernel_policy", [](const std::string& p) {
        if (p == "auto") kernel_policy() = KP_AUTO;
        else if (p == "tiled") kernel_policy() = KP_TILED;
        else if (p == "walk") kernel_policy() = KP_WALK;
        else throw std::invalid_argument("set_kernel_policy: 'auto', 'tiled' or 'walk', not '" + p + "'");
    }, py::arg("policy"), "Which kernels the conv/gemm phases run: auto (per layer and phase, by the operand's density), "
       "tiled (register-tiled micro-kernels) or walk (element list walks where the operand is listed).");
    m.attr("WALK_DENSITY") = kWalkDensity;
    m.def("kernel_policy", []() {
        const KernelPolicy p = kernel_policy();
        return std::string(p == KP_TILED ? "tiled" : p == KP_WALK ? "walk" : "auto");
    }, "The kernel policy in force (set_kernel_policy).");
    m.def("os_threads", &os_threads, "CPUs the OS lets this process run on (its affinity mask): the default thread count.");
    m.def("cache_sizes", []() {
        const CacheSizes& c = cache_sizes();
        py::dict d;
        d["l1d"] = c.l1d;
        d["l2"] = c.l2;
        d["line"] = c.line;
        d["measured"] = c.measured;
        return d;
    }, "Cache sizes the tiled kernels size their blocks from (read at run time; measured=False: fallbacks).");
    m.def("has_openmp", []() {
#ifdef _OPENMP
        return true;
#else
        return false;
#endif
    }, "Whether the module was built with OpenMP.");
    m.def("release_cached_memory", []() { Guard g; return release_cached(); },
          "Free the idle large buffers kept for reuse between steps (at most 256 MiB); returns the bytes freed.");
    m.def("memory_stats", []() {
        const MemStats s = mem_stats();
        py::dict d;
        d["live"] = s.live;
        d["peak"] = s.peak;
        d["cached"] = s.cached;
        return d;
    }, "Bytes of the kernels' buffers: live (in use), peak (high-water mark since reset_memory_peak), cached (freed, kept for reuse).");
    m.def("reset_memory_peak", []() { reset_peak(); }, "Start a new high-water mark of memory_stats()['peak'] at the bytes in use now.");
    m.attr("SIMD_ISA") = simd_isa();
    m.attr("LEVEL") = ET_LEVEL;
    m.def("cpu_supports", &cpu_supports, py::arg("level"),
          "Whether this CPU can run the kernels of an ISA level (baseline, avx2, avx512).");
    m.attr("VECTOR_FLOATS") = VW;
    m.attr("ACT_NONE") = (int)ACT_NONE;
    m.attr("ACT_RELU") = (int)ACT_RELU;
    m.attr("ACT_CLIP") = (int)ACT_CLIP;
    m.attr("ACT_RELU6") = (int)ACT_CLIP;
    m.attr("ACT_HSWISH") = (int)ACT_HSWISH;
    m.attr("ACT_LEAKY") = (int)ACT_LEAKY;
    m.attr("ACT_SIGMOID") = (int)ACT_SIGMOID;
    m.attr("ACT_INPUT") = (int)ACT_INPUT;

    py::class_<ActInfo, InfoPtr>(m, "SparseInfo", py::module_local(),
        "What FP keeps for BP/WG (compressed activation + plan). Produced by layer forward, activate() or analyze_input().")
        .def_property_readonly("shape", [](const ActInfo& I) { return py::make_tuple(I.N, I.H, I.W, I.C); })
        .def_property_readonly("act", [](const ActInfo& I) { return I.act; })
        .def_property_readonly("dense", [](const ActInfo& I) { return I.all; })
        .def_property_readonly("constrained", [](const ActInfo& I) { return I.kind != KD_DENSE; })
        .def_property_readonly("size", [](const ActInfo& I) { return I.P * I.C; })
        .def_property_readonly("nnz", [](const ActInfo& I) { return I.nnz_a; })
        .def_property_readonly("g_count", [](const ActInfo& I) { return I.cnt_g; })
        .def_property_readonly("sparsity", [](const ActInfo& I) { return I.P * I.C ? 1.0 - double(I.nnz_a) / double(I.P * I.C) : 0.0; })
        .def_property_readonly("g_sparsity", [](const ActInfo& I) { return I.P * I.C ? 1.0 - double(I.cnt_g) / double(I.P * I.C) : 0.0; })
        .def("stored_bytes", &ActInfo::stored_bytes)
        .def("dense_bytes", &ActInfo::dense_bytes)
        .def("plan_bytes", &ActInfo::plan_bytes)
        .def("decompress", &decompress)
        .def("mask_a", &mask_a)
        .def("mask_g", &mask_g)
        .def("state", &states)
        .def("pixel_lists", [](ActInfo& I) { return lists(I, false); })
        .def("g_lists", [](ActInfo& I) { return lists(I, true); })
        .def("packed_values", &packed_values)
        .def("channel_counts", [](const ActInfo& I) { return py::array_t<int64_t>(I.chan_nnz.size(), I.chan_nnz.data()); })
        .def("zero_structure", &zero_structure,
             "Zero structure measured by the epilogue: whole pixels and whole channel blocks (block_channels = the "
             "vector width) with no element in A (zero_*_a) and outside G (zero_*_g).")
        .def("pixel_counts", [](const ActInfo& I) {
            return py::make_tuple(py::array_t<int32_t>(I.P, I.acnt.data()), py::array_t<int32_t>(I.P, I.gcnt.data()));
        })
        .def("grad_z", &grad_z, py::arg("grad_a"))
        .def("flatten", [](const InfoPtr& I) { Guard g; return flatten_info(I); })
        .def("with_mode", [](const InfoPtr& I, bool dense) { Guard g; return to_mode(I, dense); }, py::arg("dense"))
        .def("__repr__", [](const ActInfo& I) {
            return "SparseInfo(shape=(" + std::to_string(I.N) + "," + std::to_string(I.H) + "," + std::to_string(I.W) + "," +
                   std::to_string(I.C) + "), act=" + std::to_string(I.act) + ", dense=" + (I.all ? "True" : "False") +
                   ", nnz=" + std::to_string(I.nnz_a) + ")";
        });

    m.def("analyze_input", &analyze, py::arg("x"), py::arg("dense") = false, py::arg("min_sparsity") = 0.0,
          "Build a SparseInfo for a tensor with no known constraint (network input, pool/Add/BN output): the only place zeros are discovered. "
          "With min_sparsity, a tensor with a smaller fraction of zeros is built in dense mode.");
    m.def("activate", [](farr z, py::object act, float alpha, float lo, float hi, bool dense) {
        const auto [N, H, W, C] = nhwc_dims(z, "activate");
        int a = parse_act(act);
        std::vector<py::ssize_t> shape(z.shape(), z.shape() + z.ndim());
        py::array_t<float> out(shape);
        float* o = out.mutable_data();
        const float* zp = z.data();
        InfoPtr I;
        {
            Guard g;
            I = activate_rows(zp, o, N, H, W, C, a, alpha, lo, hi, dense);
        }
        return py::make_tuple(out, I);
    }, py::arg("z"), py::arg("act"), py::arg("alpha") = 0.01f, py::arg("lo") = 0.f, py::arg("hi") = 6.f, py::arg("dense") = false,
       "Fused activation of a pre-activation z -> (a, SparseInfo).");

    py::class_<PyConv> conv(m, "ConvLayer", py::module_local(), "Sparse 2-D convolution + bias + fused activation, NHWC.");
    conv.def(py::init([](int cin, int cout, std::vector<int> kernel, std::vector<int> stride, std::vector<int> pads,
                         std::vector<int> dilation, int groups, py::object act, float alpha, float lo, float hi) {
                 if (kernel.size() != 2 || stride.size() != 2 || dilation.size() != 2 || pads.size() != 4)
                     throw std::invalid_argument("ConvLayer: kernel/stride/dilation need 2 values, pads 4 (top,left,bottom,right)");
                 auto p = std::make_unique<PyConv>();
                 p->L = std::make_unique<ConvLayer>(cin, cout, kernel[0], kernel[1], stride[0], stride[1], pads[0], pads[1], pads[2],
                                                    pads[3], dilation[0], dilation[1], groups, parse_act(act), alpha, lo, hi);
                 return p;
             }),
             py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel") = std::vector<int>{1, 1},
             py::arg("stride") = std::vector<int>{1, 1}, py::arg("pads") = std::vector<int>{0, 0, 0, 0},
             py::arg("dilation") = std::vector<int>{1, 1}, py::arg("groups") = 1, py::arg("act") = 0, py::arg("alpha") = 0.01f,
             py::arg("lo") = 0.f, py::arg("hi") = 6.f)
        .def("out_shape", [](PyConv& p, int H, int W) { int a, b; p.L->out_shape(H, W, a, b); return py::make_tuple(a, b); })
        .def_property_readonly("depthwise", [](PyConv& p) { return p.L->depthwise; });
    layer_methods(conv);

    py::class_<PyGemm> gemm(m, "GemmLayer", py::module_local(), "Sparse fully-connected layer y = f(x W^T + b), x (N, in), W (out, in).");
    gemm.def(py::init([](int fin, int fout, py::object act, float alpha, float lo, float hi) {
                 auto p = std::make_unique<PyGemm>();
                 p->gemm = true;
                 p->L = std::make_unique<ConvLayer>(fin, fout, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, parse_act(act), alpha, lo, hi);
                 return p;
             }),
             py::arg("in_features"), py::arg("out_features"), py::arg("act") = 0, py::arg("alpha") = 0.01f, py::arg("lo") = 0.f,
             py::arg("hi") = 6.f);
    layer_methods(gemm);

    register_ops(m);
    register_op_kernels(m);
}
