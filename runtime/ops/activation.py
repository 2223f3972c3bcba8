"""The activations: ReLU, Clip (ReLU6), HardSwish, HardSigmoid, LeakyReLU, Sigmoid.

They are one op family: each is an elementwise f(z), its derivative is dense_ops.act_derivative,
and which non-zero position constraint it gives is the one table of runtime/constraints.py. The
native engine fuses an activation into the Conv/Gemm before it where it can (native/info.cpp);
on its own it runs the same epilogue through `activate`, which builds the activation's plan."""
from __future__ import annotations

import numpy as np

from ..constraints import rule_for
from ..engines import dense_ops as D
from . import Op, register

# IR activation -> the native kernels' activation name; HardSigmoid has no fused kernel
NATIVE_ACT = {"relu": "relu", "clip": "clip", "hardswish": "hardswish", "leakyrelu": "leaky_relu",
              "sigmoid": "sigmoid"}


def native_act_args(act) -> dict:
    """Keyword arguments of the native kernels for the activation node `act` (None: no activation)."""
    if act is None:
        return {"act": "none"}
    kw = {"act": NATIVE_ACT[act.op]}
    if act.op == "clip":
        kw.update(lo=max(act.attrs["min"], -3.4e38), hi=min(act.attrs["max"], 3.4e38))
    if act.op == "leakyrelu":
        kw["alpha"] = act.attrs["alpha"]
    return kw


class Activation(Op):
    """One activation f; `rule` is its row of the constraint table."""

    def __init__(self, name, onnx_op, attrs=lambda imp, node, a: {}):
        self.name, self.onnx_ops, self._attrs = name, (onnx_op,), attrs
        self.rule = rule_for(name, {"min": 0.0, "max": 6.0} if name == "clip" else {}).text
        if name == "clip":
            self.rule += "; other bounds: " + rule_for("clip", {"min": -1.0, "max": 1.0}).text

    def import_onnx(self, imp, node, i, a):
        imp.add(node, i, self.name, [node.input[0]], attrs=self._attrs(imp, node, a))

    def forward(self, node, xs, get):
        a = D.act_forward(node.op, xs[0], node.attrs)
        return a, (xs[0], a)

    def backward(self, node, d, cache, get, need):
        z, a = cache
        return [d * D.act_derivative(node.op, z, a, node.attrs)], {}

    def native_forward(self, eng, node, xs):
        if node.op not in NATIVE_ACT:
            a = D.act_forward(node.op, xs[0], node.attrs)
            return a, (xs[0], a), None
        from edgetune import _native as nat

        a, info = nat.activate(np.ascontiguousarray(xs[0]), dense=eng.dense_plan(node.output),
                               **native_act_args(node))
        return a, info, info

    def native_backward(self, eng, node, g, ctx, need):
        if isinstance(ctx, tuple):
            z, a = ctx
            return [g * D.act_derivative(node.op, z, a, node.attrs)], {}
        return [ctx.grad_z(g)], {}

    def torch(self, F, t, node, a, p):
        x, at = a[0], node.attrs
        if node.op == "relu":
            return F.relu(x)
        if node.op == "hardswish":
            return F.hardswish(x)
        if node.op == "sigmoid":
            return t.sigmoid(x)
        if node.op == "clip":
            return F.hardtanh(x, at["min"], at["max"])
        if node.op == "hardsigmoid":
            return t.clamp(at["alpha"] * x + at["beta"], 0, 1)
        return F.leaky_relu(x, at["alpha"])


def _clip_attrs(imp, node, a):
    lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(imp.const(node.input[1], "min", node))
    if len(node.input) > 2 and node.input[2]:
        hi = float(imp.const(node.input[2], "max", node))
    return {"min": float(lo), "max": float(hi)}


register(Activation("relu", "Relu"))
register(Activation("clip", "Clip", _clip_attrs))
register(Activation("hardswish", "HardSwish"))
register(Activation("hardsigmoid", "HardSigmoid",
                    lambda imp, node, a: {"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))}))
register(Activation("leakyrelu", "LeakyRelu", lambda imp, node, a: {"alpha": float(a.get("alpha", 0.01))}))
register(Activation("sigmoid", "Sigmoid"))
