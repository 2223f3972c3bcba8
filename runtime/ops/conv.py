"""Conv: 2-D convolution (stride, pads, dilation, groups, depthwise) with a constant weight.

The native engine runs it as a fused layer (native/conv.cpp) with the activation after it."""
from __future__ import annotations

from ..engines import dense_ops as D
from . import Op, register


class Conv(Op):
    name = "conv"
    onnx_ops = ("Conv",)
    trainable = ("W", "B")
    rule = "a weight layer: skips its input's zeros (FP, WG) and computes its input error inside G (BP)"
    cost = "MACs per phase on the PE array (runtime/accel/cost.py)"

    def import_onnx(self, imp, node, i, a):
        w = imp.consts.get(node.input[1])
        if w is None or w.ndim != 4:
            imp.fail(f"Conv node {node.name!r}: only 2-D convolution with constant weights is supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            imp.fail(f"Conv node {node.name!r}: auto_pad={a['auto_pad']!r} is not supported; use explicit pads")
        params = {"W": imp.param(node.input[1], node)}
        if len(node.input) > 2 and node.input[2]:
            params["B"] = imp.param(node.input[2], node)
        attrs = {"stride": tuple(a.get("strides", (1, 1))), "pads": tuple(a.get("pads", (0, 0, 0, 0))),
                 "dilation": tuple(a.get("dilations", (1, 1))), "group": int(a.get("group", 1)),
                 "kernel": tuple(w.shape[2:])}
        imp.add(node, i, "conv", [node.input[0]], params, attrs)

    def forward(self, node, xs, get):
        x = xs[0]
        y, xp = D.conv_forward(x, get("W"), get("B"), node.attrs)
        return y, (xp, x.shape)

    def backward(self, node, d, cache, get, need):
        xp, xshape = cache
        dx, dW, dB = D.conv_backward(d, xp, xshape, get("W"), node.attrs, need[0])
        return [dx], {"W": dW, "B": dB}

    def torch(self, F, t, node, a, p):
        at, x = node.attrs, a[0]
        pt, pl, pb, pr = at["pads"]
        if (pt, pl) != (pb, pr):
            x = F.pad(x, (pl, pr, pt, pb))
            pt = pl = 0
        return F.conv2d(x, p["W"], p.get("B"), at["stride"], (pt, pl), at["dilation"], at["group"])


register(Conv())
