"""Channel shuffle (ShuffleNet): Reshape (N, g, C/g, H, W) -> Transpose (0, 2, 1, 3, 4) -> Reshape
(N, C, H, W), imported as one node `shuffle` with `groups` g. Output channel j*g + i is input
channel i*(C/g) + j. Any other Transpose is an error naming it.

Constraint: a channel permutation; masks and G are permuted alike."""
from __future__ import annotations

import numpy as np

from . import Op, register


def permutation(c: int, groups: int) -> np.ndarray:
    """The input channel of each output channel."""
    return np.arange(c).reshape(groups, c // groups).T.reshape(-1)


class Shuffle(Op):
    name = "shuffle"
    onnx_ops = ("Transpose",)
    rule = "permutes A and G with the channels"

    def import_onnx(self, imp, node, i, a):
        perm = tuple(int(p) for p in a.get("perm", ()))
        src = imp.value(node.input[0])
        prev = imp.nodes[-1] if imp.nodes else None
        target = prev.attrs.get("shape", ()) if prev is not None and prev.op == "reshape" else ()
        if perm != (0, 2, 1, 3, 4) or prev is None or prev.output != src or len(target) != 5:
            imp.fail(f"Transpose node {node.name!r} (perm {perm}): only the Transpose of a channel shuffle "
                     "(Reshape to (N, g, C/g, H, W), perm (0, 2, 1, 3, 4), Reshape back) is supported")
        if len(imp.readers(node.input[0])) != 1:
            imp.fail(f"Transpose node {node.name!r}: the 5-D value it transposes has other readers")
        imp.nodes.pop()
        _, g, cg, h, w = target
        imp.add(node, i, "shuffle", [prev.inputs[0]], attrs={"groups": int(g)})
        imp.shuffled[node.output[0]] = (int(g) * int(cg), int(h), int(w))

    def forward(self, node, xs, get):
        x = xs[0]
        perm = permutation(x.shape[1], node.attrs["groups"])
        return np.ascontiguousarray(x[:, perm]), perm

    def backward(self, node, d, cache, get, need):
        dx = np.empty_like(d)
        dx[:, cache] = d
        return [dx], {}

    def native_forward(self, eng, node, xs):
        x = xs[0]
        perm = permutation(x.shape[-1], node.attrs["groups"])
        return np.ascontiguousarray(x[..., perm]), perm, None

    def native_backward(self, eng, node, g, ctx, need):
        dx = np.empty_like(g)
        dx[..., ctx] = g
        return [dx], {}

    def torch(self, F, t, node, a, p):
        x = a[0]
        n, c, h, w = x.shape
        g = node.attrs["groups"]
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


register(Shuffle())
