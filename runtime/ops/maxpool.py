"""MaxPool (2-D, explicit pads, ceil mode; the first maximum of a window wins, like torch)."""
from __future__ import annotations

from ..engines import dense_ops as D
from . import Op, register


def pool_attrs(imp, node, a) -> dict:
    """Kernel, stride, pads and ceil mode of a 2-D pooling node, with clear errors."""
    k = tuple(a["kernel_shape"])
    if len(k) != 2:
        imp.fail(f"{node.op_type} node {node.name!r}: only 2-D pooling is supported")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        imp.fail(f"{node.op_type} node {node.name!r}: auto_pad is not supported; use explicit pads")
    if tuple(a.get("dilations", (1, 1))) != (1, 1):
        imp.fail(f"{node.op_type} node {node.name!r}: dilated pooling is not supported")
    return {"kernel": k, "stride": tuple(a.get("strides", (1, 1))),
            "pads": tuple(a.get("pads", (0, 0, 0, 0))), "ceil_mode": int(a.get("ceil_mode", 0))}


class MaxPool(Op):
    name = "maxpool"
    onnx_ops = ("MaxPool",)
    rule = "G = all; the output's zeros are found by analysing it"

    def import_onnx(self, imp, node, i, a):
        if len(node.output) > 1 and node.output[1]:
            imp.fail(f"MaxPool node {node.name!r}: the Indices output is not supported")
        imp.add(node, i, "maxpool", [node.input[0]], attrs=pool_attrs(imp, node, a))

    def forward(self, node, xs, get):
        y, (arg, xp_shape, pad) = D.maxpool_forward(xs[0], node.attrs)
        return y, (arg, xp_shape, pad, xs[0].shape)

    def backward(self, node, d, cache, get, need):
        arg, xp_shape, pad, x_shape = cache
        return [D.maxpool_backward(d, (arg, xp_shape, pad), x_shape, node.attrs)], {}

    def native_forward(self, eng, node, xs):
        from edgetune import _native as nat

        at, x = node.attrs, xs[0]
        y, arg = nat.maxpool_forward(x, list(at["kernel"]), list(at["stride"]), list(at["pads"]),
                                     bool(at["ceil_mode"]))
        return y, (arg, x.shape), None

    def native_backward(self, eng, node, g, ctx, need):
        from edgetune import _native as nat

        arg, shape = ctx
        return [nat.maxpool_backward(g, arg, list(shape))], {}

    def torch(self, F, t, node, a, p):
        at = node.attrs
        pt, pl, pb, pr = at["pads"]
        return F.max_pool2d(a[0], at["kernel"], at["stride"], (pt, pl), ceil_mode=bool(at["ceil_mode"]))


register(MaxPool())
