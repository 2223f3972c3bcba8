"""Flatten (axis 1): (N, C, H, W) -> (N, C*H*W). It moves no value, so masks and constraints pass
(Model.producer looks through it). The native engine keeps its input channels-last and hands the
HWC order to the Gemm after it, which permutes its weight columns instead (engines/native.py)."""
from __future__ import annotations

from . import Op, register


class Flatten(Op):
    name = "flatten"
    onnx_ops = ("Flatten",)
    rule = "moves no value: its input's zeros and G, re-labelled"

    def import_onnx(self, imp, node, i, a):
        if int(a.get("axis", 1)) != 1:
            imp.fail(f"Flatten node {node.name!r}: only axis=1 is supported")
        imp.add(node, i, "flatten", [node.input[0]])

    def forward(self, node, xs, get):
        x = xs[0]
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, node, d, cache, get, need):
        return [d.reshape(cache)], {}

    def torch(self, F, t, node, a, p):
        return a[0].flatten(1)


register(Flatten())
