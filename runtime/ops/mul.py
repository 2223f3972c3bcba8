"""Mul of two activations with broadcasting: a squeeze-and-excitation gate x * s[N, C, 1, 1]
(MobileNetV3, EfficientNet) and SiLU/Swish as the exporters write it, x * Sigmoid(x).

Constraint (runtime/constraints.py, gate_rule): a zero of either factor is a zero of the
product, so the product keeps x's zeros under a gate that is positive (Sigmoid) and gains the
channels where a gate that can be 0 (HardSigmoid) is 0, which are known only once the gate is
computed: the product is analysed (its zeros found) like any tensor no activation made, and its
G is everything. Exact either way."""
from __future__ import annotations

import numpy as np

from . import Op, register


def unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """Sum `g` over the axes along which a value of `shape` was broadcast to g's shape."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    out = g.sum(axis=axes, keepdims=True) if axes else g
    return np.ascontiguousarray(out.reshape(shape), dtype=g.dtype)


def _gate_index(x, y):
    """Which factor of a channels-last product is a squeeze-and-excitation gate (N, 1, 1, C) of the
    other (N, H, W, C): 1, 0, or None for any other product."""
    for gate, (full, s) in ((1, (x, y)), (0, (y, x))):
        if (full.ndim == 4 and s.ndim == 4 and s.shape[1:3] == (1, 1) and s.shape[0] == full.shape[0]
                and s.shape[3] == full.shape[3] and full.shape[1:3] != (1, 1)):
            return gate
    return None


class Mul(Op):
    name = "mul"
    onnx_ops = ("Mul",)
    rule = "zeros of either factor pass; the product is analysed, G = all (see node_rule)"

    def node_rule(self, model, node) -> str:
        """The rule of this Mul: by the activation that made its gate (the factor of fewer elements,
        or the Sigmoid of SiLU's Mul(z, Sigmoid(z)))."""
        from ..constraints import RULES, gate_rule

        made = [model.producer(i) for i in node.inputs]
        gates = [p for p in made if p is not None and p.op in RULES and p.op in ("sigmoid", "hardsigmoid")]
        return gate_rule(gates[0] if gates else None)

    def import_onnx(self, imp, node, i, a):
        consts = [x for x in node.input if x in imp.consts]
        if consts:
            imp.fail(f"Mul node {node.name!r}: multiplying by a constant ({consts[0]!r}) is not supported; "
                     "only a product of two activations (a gate, SiLU)")
        imp.add(node, i, "mul", list(node.input[:2]))

    def forward(self, node, xs, get):
        x, y = xs
        return x * y, (x, y)

    def backward(self, node, d, cache, get, need):
        x, y = cache
        return [unbroadcast(d * y, x.shape) if need[0] else None,
                unbroadcast(d * x, y.shape) if need[1] else None], {}

    def native_forward(self, eng, node, xs):
        x, y = xs
        if x.ndim != y.ndim:
            eng.unsupported(node, f"factors of rank {x.ndim} and {y.ndim}")
        gate = _gate_index(x, y)
        if gate is None:
            return x * y, (x, y, None), None
        from edgetune import _native as nat

        full, s = (x, y) if gate == 1 else (y, x)
        return nat.gate_mul_forward(np.ascontiguousarray(full), np.ascontiguousarray(s)), (x, y, gate), None

    def native_backward(self, eng, node, g, ctx, need):
        x, y, gate = ctx
        if gate is None:
            return self.backward(node, g, (x, y), None, need)
        from edgetune import _native as nat

        full, s = (x, y) if gate == 1 else (y, x)
        need_full, need_gate = (need[0], need[1]) if gate == 1 else (need[1], need[0])
        d_full, d_gate = nat.gate_mul_backward(g, np.ascontiguousarray(full), np.ascontiguousarray(s),
                                               need_full, need_gate)
        return [d_full, d_gate] if gate == 1 else [d_gate, d_full], {}

    def torch(self, F, t, node, a, p):
        return a[0] * a[1]


register(Mul())
