"""AveragePool (2-D, explicit pads, ceil mode, count_include_pad)."""
from __future__ import annotations

from ..engines import dense_ops as D
from . import Op, register
from .maxpool import pool_attrs


class AvgPool(Op):
    name = "avgpool"
    onnx_ops = ("AveragePool",)

    def import_onnx(self, imp, node, i, a):
        attrs = pool_attrs(imp, node, a)
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
        imp.add(node, i, "avgpool", [node.input[0]], attrs=attrs)

    def forward(self, node, xs, get):
        y, (cnt, xp_shape, pad) = D.avgpool_forward(xs[0], node.attrs)
        return y, (cnt, xp_shape, pad, xs[0].shape)

    def backward(self, node, d, cache, get, need):
        cnt, xp_shape, pad, x_shape = cache
        return [D.avgpool_backward(d, (cnt, xp_shape, pad), x_shape, node.attrs)], {}

    def native_forward(self, eng, node, xs):
        from edgetune import _native as nat

        at, x = node.attrs, xs[0]
        y = nat.avgpool_forward(x, list(at["kernel"]), list(at["stride"]), list(at["pads"]),
                                bool(at["ceil_mode"]), bool(at["count_include_pad"]))
        return y, x.shape, None

    def native_backward(self, eng, node, g, ctx, need):
        from edgetune import _native as nat

        at = node.attrs
        return [nat.avgpool_backward(g, list(ctx), list(at["kernel"]), list(at["stride"]), list(at["pads"]),
                                     bool(at["ceil_mode"]), bool(at["count_include_pad"]))], {}

    def torch(self, F, t, node, a, p):
        at = node.attrs
        pt, pl, pb, pr = at["pads"]
        return F.avg_pool2d(a[0], at["kernel"], at["stride"], (pt, pl), ceil_mode=bool(at["ceil_mode"]),
                            count_include_pad=bool(at["count_include_pad"]))


register(AvgPool())
