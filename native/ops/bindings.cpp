// pybind11 glue of the kernels in native/ops/ (the kernels themselves know nothing of Python).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>

#include "../pooled_array.hpp"
#include "gate.hpp"

namespace py = pybind11;
using namespace et;

namespace et {
std::mutex& kernel_mutex();
}

namespace {

using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;

struct Guard {  // release the GIL, take the kernel lock
    py::gil_scoped_release rel;
    std::lock_guard<std::mutex> lk{kernel_mutex()};
};

// (N, Q, C) of an NHWC activation x and the (N, 1, 1, C) or (N, C) gate s that scales it
void gate_dims(const farr& x, const farr& s, int& N, i64& Q, int& C) {
    if (x.ndim() != 4) throw std::invalid_argument("gate_mul: x must be NHWC (4-D)");
    N = (int)x.shape(0);
    C = (int)x.shape(3);
    Q = (i64)x.shape(1) * x.shape(2);
    if (s.size() != (i64)N * C || s.shape(0) != N || s.shape(s.ndim() - 1) != C)
        throw std::invalid_argument("gate_mul: the gate must be (N, 1, 1, C) or (N, C) for x of (N, H, W, C)");
}

py::array_t<float> gate_forward(farr x, farr s) {
    int N, C;
    i64 Q;
    gate_dims(x, s, N, Q, C);
    auto y = pooled_array<float>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
    const float *xp = x.data(), *sp = s.data();
    float* yp = y.mutable_data();
    Guard g;
    gate_mul_forward(xp, sp, yp, N, Q, C);
    return y;
}

py::tuple gate_backward(farr grad, farr x, farr s, bool need_x, bool need_gate) {
    int N, C;
    i64 Q;
    gate_dims(x, s, N, Q, C);
    if (grad.size() != x.size()) throw std::invalid_argument("gate_mul_backward: grad must have x's shape");
    py::object dx = py::none(), ds = py::none();
    float *dxp = nullptr, *dsp = nullptr;
    if (need_x) {
        auto a = pooled_array<float>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
        dxp = a.mutable_data();
        dx = a;
    }
    if (need_gate) {
        std::vector<py::ssize_t> shape(s.shape(), s.shape() + s.ndim());
        auto a = py::array_t<float>(shape);
        dsp = a.mutable_data();
        ds = a;
    }
    const float *gp = grad.data(), *xp = x.data(), *sp = s.data();
    {
        Guard g;
        gate_mul_backward(gp, xp, sp, dxp, dsp, N, Q, C);
    }
    return py::make_tuple(dx, ds);
}

py::array_t<float> concat_py(std::vector<farr> parts) {
    if (parts.empty()) throw std::invalid_argument("concat_channels: no inputs");
    const py::ssize_t nd = parts[0].ndim();
    std::vector<py::ssize_t> shape(parts[0].shape(), parts[0].shape() + nd);
    std::vector<int> widths;
    std::vector<const float*> ptrs;
    shape[nd - 1] = 0;
    for (auto& p : parts) {
        if (p.ndim() != nd || !std::equal(p.shape(), p.shape() + nd - 1, parts[0].shape()))
            throw std::invalid_argument("concat_channels: inputs differ in a dimension other than the last");
        widths.push_back((int)p.shape(nd - 1));
        ptrs.push_back(p.data());
        shape[nd - 1] += p.shape(nd - 1);
    }
    const i64 P = shape[nd - 1] ? (i64)(parts[0].size() / std::max<py::ssize_t>(widths[0], 1)) : 0;
    auto out = pooled_array<float>(shape);
    float* op = out.mutable_data();
    Guard g;
    if (widths[0] == 0) return out;
    concat_last(ptrs.data(), widths.data(), (int)widths.size(), P, op);
    return out;
}

py::list split_py(farr grad, std::vector<int> widths) {
    const py::ssize_t nd = grad.ndim();
    int total = 0;
    for (int w : widths) {
        if (w <= 0) throw std::invalid_argument("split_channels: widths must be positive");
        total += w;
    }
    if (nd < 1 || grad.shape(nd - 1) != total) throw std::invalid_argument("split_channels: widths must sum to the last dimension");
    const i64 P = grad.size() / total;
    py::list out;
    std::vector<float*> ptrs;
    for (int w : widths) {
        std::vector<py::ssize_t> shape(grad.shape(), grad.shape() + nd);
        shape[nd - 1] = w;
        auto a = pooled_array<float>(shape);
        ptrs.push_back(a.mutable_data());
        out.append(a);
    }
    const float* gp = grad.data();
    Guard g;
    split_last(gp, widths.data(), (int)widths.size(), P, ptrs.data());
    return out;
}

}  // namespace

void register_op_kernels(py::module_& m) {
    m.def("gate_mul_forward", &gate_forward, py::arg("x"), py::arg("gate"),
          "x (N,H,W,C) times a per-image, per-channel gate (N,1,1,C) or (N,C).");
    m.def("gate_mul_backward", &gate_backward, py::arg("grad_y"), py::arg("x"), py::arg("gate"), py::arg("need_x") = true,
          py::arg("need_gate") = true, "Backward of gate_mul_forward -> (grad_x or None, grad_gate in the gate's shape or None).");
    m.def("concat_channels", &concat_py, py::arg("parts"), "Concatenate channels-last arrays along the last axis.");
    m.def("split_channels", &split_py, py::arg("grad"), py::arg("widths"),
          "Split an array along the last axis into parts of the given widths (the backward of concat_channels).");
}
