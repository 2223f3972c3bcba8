"""BatchNormalization with frozen running statistics: scale and bias train, mean and variance
stay as exported (the usual choice for small on-device batches)."""
from __future__ import annotations

from ..engines import dense_ops as D
from . import Op, register


class BatchNorm(Op):
    name = "batchnorm"
    onnx_ops = ("BatchNormalization",)
    trainable = ("scale", "B")
    rule = "G = all; an affine map per channel (zeros found by analysing the output)"

    def import_onnx(self, imp, node, i, a):
        roles = ("scale", "B", "mean", "var")
        if a.get("training_mode", 0):
            imp.fail(f"BatchNormalization node {node.name!r}: training_mode=1 graphs are not supported")
        params = {r: imp.param(n, node) for r, n in zip(roles, node.input[1:5])}
        imp.add(node, i, "batchnorm", [node.input[0]], params, {"epsilon": float(a.get("epsilon", 1e-5))})

    def forward(self, node, xs, get):
        return D.batchnorm_forward(xs[0], get("scale"), get("B"), get("mean"), get("var"), node.attrs["epsilon"])

    def backward(self, node, d, cache, get, need):
        dx, dscale, dbias = D.batchnorm_backward(d, cache, get("scale"))
        return [dx], {"scale": dscale, "B": dbias}

    def native_forward(self, eng, node, xs):
        from edgetune import _native as nat

        g = eng.param_getter(node)
        x = xs[0]
        return nat.batchnorm_forward(x, g("scale"), g("B"), g("mean"), g("var"), node.attrs["epsilon"]), x, None

    def native_backward(self, eng, node, g, ctx, need):
        from edgetune import _native as nat

        p = eng.param_getter(node)
        dx, dscale, dbias = nat.batchnorm_backward(g, ctx, p("scale"), p("mean"), p("var"), node.attrs["epsilon"])
        return [dx], {"scale": dscale, "B": dbias}

    def torch(self, F, t, node, a, p):
        return F.batch_norm(a[0], p["mean"].detach(), p["var"].detach(), p["scale"], p["B"], False, 0.0,
                            node.attrs["epsilon"])


register(BatchNorm())
