"""Split and Slice along the channel axis, as `chunk` / indexing exports them (ShuffleNet's units
split their input in two): each output is an IR node `slice` with the channels [start, end).
Slice bounds must be constants (import folds the Shape -> Gather -> Div chains TorchScript writes
for them, runtime/onnx_batch.py); a Split without sizes splits like torch.chunk.

Constraint: a slice keeps its channels' zeros and G."""
from __future__ import annotations

import numpy as np

from . import Op, register

_BIG = 2 ** 62   # an open end ("to the last channel")


def _bounds(attrs, c):
    """[start, end) of the channels a slice takes out of `c`."""
    if "parts" in attrs:
        size = -(-c // attrs["parts"])
        start = min(c, attrs["index"] * size)
        return start, min(c, start + size)
    start, end = attrs["start"], attrs["end"]
    start = max(0, start + c if start < 0 else start)
    end = min(c, end + c if end < 0 else end)
    return min(start, c), max(min(start, c), end)


class Slice(Op):
    name = "slice"
    onnx_ops = ("Slice", "Split")
    rule = "keeps its channels' A and G"

    def import_onnx(self, imp, node, i, a):
        if node.op_type == "Split":
            return self._split(imp, node, i, a)
        if len(node.input) < 3:   # opset < 10: bounds as attributes
            starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
        else:
            def c(k, what):
                return imp.const(node.input[k], what, node).tolist() if len(node.input) > k and node.input[k] else None

            starts, ends, axes, steps = c(1, "starts"), c(2, "ends"), c(3, "axes"), c(4, "steps")
        axes = axes if axes is not None else list(range(len(starts)))
        if len(axes) != 1 or int(axes[0]) != 1 or (steps is not None and list(steps) != [1]):
            imp.fail(f"Slice node {node.name!r}: only a slice of the channel axis (axes=[1], step 1) is "
                     f"supported, got axes={axes}, steps={steps}")
        imp.add(node, i, "slice", [node.input[0]],
                attrs={"axis": 1, "start": int(starts[0]), "end": int(min(int(ends[0]), _BIG))})

    def _split(self, imp, node, i, a):
        if int(a.get("axis", 0)) != 1:
            imp.fail(f"Split node {node.name!r}: only a split of the channel axis (axis=1) is supported, "
                     f"got axis={a.get('axis', 0)}")
        sizes = a.get("split")
        if len(node.input) > 1 and node.input[1]:
            sizes = imp.const(node.input[1], "split", node).tolist()
        outs = list(node.output)
        start = 0
        for k, out in enumerate(outs):
            if sizes is not None:
                attrs = {"axis": 1, "start": start, "end": start + int(sizes[k])}
                start += int(sizes[k])
            else:
                attrs = {"axis": 1, "parts": len(outs), "index": k}
            if not out:
                continue
            imp.add(node, i, "slice", [node.input[0]], attrs=attrs, output=out, suffix=f":{k}")

    def forward(self, node, xs, get):
        x = xs[0]
        s, e = _bounds(node.attrs, x.shape[1])
        return np.ascontiguousarray(x[:, s:e]), (x.shape, s, e)

    def backward(self, node, d, cache, get, need):
        shape, s, e = cache
        dx = np.zeros(shape, d.dtype)
        dx[:, s:e] = d
        return [dx], {}

    def native_forward(self, eng, node, xs):
        x = xs[0]
        s, e = _bounds(node.attrs, x.shape[-1])
        return np.ascontiguousarray(x[..., s:e]), (x.shape, s, e), None

    def native_backward(self, eng, node, g, ctx, need):
        shape, s, e = ctx
        dx = np.zeros(shape, np.float32)
        dx[..., s:e] = g
        return [dx], {}

    def torch(self, F, t, node, a, p):
        s, e = _bounds(node.attrs, a[0].shape[1])
        return a[0][:, s:e]


register(Slice())
