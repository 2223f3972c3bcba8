"""Reshape with a constant target that keeps the batch in dim 0 (runtime/onnx_batch.py rewrites
every exported target into that form). It moves no value, so masks and constraints pass. The
native engine runs the flattening kind (N, C, H, W) -> (N, C*H*W); a channel shuffle's
Reshape -> Transpose -> Reshape is imported as one `shuffle` node (shuffle.py)."""
from __future__ import annotations

from ..engines import dense_ops as D
from . import Op, register


class Reshape(Op):
    name = "reshape"
    onnx_ops = ("Reshape",)
    rule = "moves no value: its input's zeros and G, re-labelled"

    def import_onnx(self, imp, node, i, a):
        shape = tuple(int(s) for s in imp.const(node.input[1], "shape", node).tolist())
        src = imp.value(node.input[0])
        if src in imp.shuffled:     # the Reshape that closes a channel shuffle
            c, h, w = imp.shuffled.pop(src)
            if shape[1:] != (c, h, w):
                imp.fail(f"Reshape node {node.name!r}: after the Transpose of a channel shuffle only the "
                         f"reshape back to (N, {c}, {h}, {w}) is supported, got {shape}")
            imp.alias[node.output[0]] = src
            return
        imp.add(node, i, "reshape", [node.input[0]], attrs={"shape": shape})

    def forward(self, node, xs, get):
        x = xs[0]
        return x.reshape(D.reshape_target(node.attrs["shape"], x.shape)), x.shape

    def backward(self, node, d, cache, get, need):
        return [d.reshape(cache)], {}

    def torch(self, F, t, node, a, p):
        return a[0].reshape(D.reshape_target(node.attrs["shape"], tuple(a[0].shape)))


register(Reshape())
