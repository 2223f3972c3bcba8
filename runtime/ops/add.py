"""Add: the sum of two activations (a residual), or an activation plus a constant (a bias the
exporter did not fold; trained). A MatMul followed by Add(bias) is folded into the Gemm."""
from __future__ import annotations

import numpy as np

from . import Op, register


class Add(Op):
    name = "add"
    onnx_ops = ("Add",)
    rule = "G = all; the sum's zeros are found by analysing it (a zero of each input does not make one)"

    def import_onnx(self, imp, node, i, a):
        x, y = node.input[0], node.input[1]
        if x in imp.consts and y not in imp.consts:
            x, y = y, x
        if y not in imp.consts:
            imp.add(node, i, "add", [x, y])
            return
        prev = imp.nodes[-1] if imp.nodes else None
        bias = imp.consts[y]
        # MatMul + Add(bias) is how torch writes Linear without Gemm: fold the bias in
        if (prev is not None and prev.op == "gemm" and "B" not in prev.params
                and prev.output == imp.value(x) and bias.ndim <= 1):
            prev.params["B"] = imp.param(y, node)
            imp.alias[node.output[0]] = prev.output
            return
        imp.add(node, i, "add_param", [x], {"B": imp.param(y, node)})

    def forward(self, node, xs, get):
        return xs[0] + xs[1], None

    def backward(self, node, d, cache, get, need):
        return [d, d], {}

    def native_forward(self, eng, node, xs):
        from edgetune import _native as nat

        return nat.add(np.ascontiguousarray(xs[0]), np.ascontiguousarray(xs[1])), None, None

    def torch(self, F, t, node, a, p):
        return a[0] + a[1]


class AddParam(Op):
    name = "add_param"
    trainable = ("B",)
    rule = "G = all; zeros found by analysing the output"

    def forward(self, node, xs, get):
        return xs[0] + get("B"), xs[0].shape

    def backward(self, node, d, cache, get, need):
        b = get("B")
        axes = tuple(range(d.ndim - b.ndim)) + tuple(i for i in range(d.ndim - b.ndim, d.ndim)
                                                      if b.shape[i - d.ndim + b.ndim] == 1)
        return [d], {"B": d.sum(axis=axes).reshape(b.shape)}

    def native_forward(self, eng, node, xs):
        x = xs[0]
        b = eng.params[node.params["B"]]
        if x.ndim == 4 and b.ndim >= 3:   # an NCHW-shaped bias, channels-last here
            b = np.moveaxis(b.reshape(b.shape[-3:]), 0, -1)
        return x + b, None, None

    def native_backward(self, eng, node, g, ctx, need):
        b = eng.params[node.params["B"]]
        s = g.sum(axis=tuple(range(g.ndim - 1))) if g.ndim == 4 else g.sum(axis=0)
        return [g], {"B": s.reshape(b.shape)}

    def torch(self, F, t, node, a, p):
        return a[0] + p["B"]


register(Add())
register(AddParam())
