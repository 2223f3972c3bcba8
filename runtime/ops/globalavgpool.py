"""GlobalAveragePool and ReduceMean over H and W (how the torch.export-based exporter writes an
adaptive average pool to 1x1): the mean of each channel, keeping or dropping the 1x1 dims."""
from __future__ import annotations

import numpy as np

from . import Op, register


class GlobalAvgPool(Op):
    name = "globalavgpool"
    onnx_ops = ("GlobalAveragePool", "ReduceMean")
    rule = "G = all; a mean is zero only where its whole channel is (found by analysing it)"

    def import_onnx(self, imp, node, i, a):
        if node.op_type == "GlobalAveragePool":
            imp.add(node, i, "globalavgpool", [node.input[0]], attrs={"keepdims": 1})
            return
        axes = a.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = imp.const(node.input[1], "axes", node).tolist()
        if axes is None or sorted(int(x) % 4 for x in axes) != [2, 3]:
            imp.fail(f"ReduceMean node {node.name!r}: only the spatial mean over axes (2, 3) of an NCHW tensor "
                     f"is supported, got axes={axes}")
        imp.add(node, i, "globalavgpool", [node.input[0]], attrs={"keepdims": int(a.get("keepdims", 1))})

    def forward(self, node, xs, get):
        x = xs[0]
        y = x.mean(axis=(2, 3), keepdims=True)
        return (y if node.attrs["keepdims"] else y[:, :, 0, 0]), x.shape

    def backward(self, node, d, cache, get, need):
        n, c, h, w = cache
        return [np.broadcast_to(d.reshape(n, c, 1, 1) / d.dtype.type(h * w), cache).astype(d.dtype)], {}

    def native_forward(self, eng, node, xs):
        from edgetune import _native as nat

        x = xs[0]
        y = nat.global_avgpool_forward(x)
        return (y.reshape(y.shape[0], 1, 1, y.shape[1]) if node.attrs["keepdims"] else y), x.shape, None

    def native_backward(self, eng, node, g, ctx, need):
        from edgetune import _native as nat

        shape = ctx
        return [nat.global_avgpool_backward(np.ascontiguousarray(g.reshape(shape[0], shape[3])), list(shape))], {}

    def torch(self, F, t, node, a, p):
        return a[0].mean(dim=(2, 3), keepdim=bool(node.attrs["keepdims"]))


register(GlobalAvgPool())
