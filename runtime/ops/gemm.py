"""Gemm (transA = 0) and MatMul by a constant 2-D weight, with a MatMul + Add(bias) pair folded
into one node (how torch writes Linear without Gemm; see add.py).

The native engine runs it as a fused layer (native/conv.cpp) with the activation after it."""
from __future__ import annotations

from ..engines import dense_ops as D
from . import Op, register


class Gemm(Op):
    name = "gemm"
    onnx_ops = ("Gemm", "MatMul")
    trainable = ("W", "B")
    rule = "a weight layer: skips its input's zeros (FP, WG) and computes its input error inside G (BP)"
    cost = "MACs per phase on the PE array (runtime/accel/cost.py)"

    def import_onnx(self, imp, node, i, a):
        w = imp.consts.get(node.input[1])
        if node.op_type == "MatMul":
            if w is None or w.ndim != 2:
                imp.fail(f"MatMul node {node.name!r}: only activation x constant 2-D weight is supported")
            imp.add(node, i, "gemm", [node.input[0]], {"W": imp.param(node.input[1], node)},
                    {"transB": 0, "alpha": 1.0, "beta": 1.0})
            return
        if a.get("transA", 0):
            imp.fail(f"Gemm node {node.name!r}: transA=1 is not supported")
        if w is None or w.ndim != 2:
            imp.fail(f"Gemm node {node.name!r}: the weight (input B) must be a 2-D constant initializer")
        params = {"W": imp.param(node.input[1], node)}
        if len(node.input) > 2 and node.input[2]:
            params["B"] = imp.param(node.input[2], node)
        attrs = {"transB": int(a.get("transB", 0)), "alpha": float(a.get("alpha", 1.0)),
                 "beta": float(a.get("beta", 1.0))}
        imp.add(node, i, "gemm", [node.input[0]], params, attrs)

    def forward(self, node, xs, get):
        return D.gemm_forward(xs[0], get("W"), get("B"), node.attrs), xs[0]

    def backward(self, node, d, cache, get, need):
        dx, dW, dB = D.gemm_backward(d, cache, get("W"), node.attrs, need[0])
        return [dx], {"W": dW, "B": dB}

    def torch(self, F, t, node, a, p):
        at = node.attrs
        w = p["W"] if at["transB"] else p["W"].t()
        y = F.linear(a[0], w) * at["alpha"]
        return y + at["beta"] * p["B"] if "B" in p else y


register(Gemm())
