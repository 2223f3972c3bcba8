"""Concat along the channel axis (axis 1 of NCHW, or of (N, F)): SqueezeNet's fire modules,
DenseNet's dense blocks, ShuffleNet's units.

Constraint: a Concat of constrained tensors is constrained; its masks and G are its inputs'
masks and G, concatenated along the channels (each channel keeps the rule of the input it came
from)."""
from __future__ import annotations

import numpy as np

from . import Op, register


class Concat(Op):
    name = "concat"
    onnx_ops = ("Concat",)
    rule = "A and G concatenate along the channels (each channel keeps its input's rule)"

    def import_onnx(self, imp, node, i, a):
        axis = int(a.get("axis", 1))
        consts = [x for x in node.input if x in imp.consts]
        if consts:
            imp.fail(f"Concat node {node.name!r}: a constant input ({consts[0]!r}) is only supported where the "
                     "Concat computes a shape, which import folds")
        if axis != 1:
            imp.fail(f"Concat node {node.name!r}: only the channel axis (axis=1) is supported, got axis={axis}")
        imp.add(node, i, "concat", list(node.input), attrs={"axis": 1})

    def forward(self, node, xs, get):
        return np.concatenate(xs, axis=1), [x.shape[1] for x in xs]

    def backward(self, node, d, cache, get, need):
        edges = np.cumsum(cache)[:-1]
        return [np.ascontiguousarray(p) for p in np.split(d, edges, axis=1)], {}

    def native_forward(self, eng, node, xs):
        # channels-last: the channel axis is the last one of an (N, H, W, C) or (N, F) array
        from edgetune import _native as nat

        if any(x.ndim != xs[0].ndim for x in xs):
            eng.unsupported(node, "its inputs have different ranks")
        widths = [int(x.shape[-1]) for x in xs]
        return nat.concat_channels([np.ascontiguousarray(x) for x in xs]), widths, None

    def native_backward(self, eng, node, g, ctx, need):
        from edgetune import _native as nat

        return list(nat.split_channels(g, ctx)), {}

    def torch(self, F, t, node, a, p):
        return t.cat(a, dim=1)


register(Concat())
