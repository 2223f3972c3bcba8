"""The dense numpy reference engine: the oracle every other engine must equal."""
from __future__ import annotations

import time
from typing import Dict

import numpy as np

from .base import Engine
from ..ops import get as get_op

F32 = np.float32


class DenseEngine(Engine):
    """Runs the IR op by op in NCHW with numpy; no zero is skipped.

    `dtype=np.float64` runs the same code in double precision: the tests' most precise
    reference (training uses float32)."""

    name = "dense"
    options = ("dtype",)

    def __init__(self, dtype=F32):
        self.dtype = np.dtype(dtype)

    def _prepare(self):
        if self.dtype != F32:
            self.params = {k: v.astype(self.dtype) for k, v in self.params.items()}

    def predict(self, x):
        return self._forward(np.asarray(x, self.dtype), keep=False)[0][self.model.output_name]

    def forward_values(self, x) -> Dict[str, np.ndarray]:
        """Every intermediate value of a forward pass, keyed by value name."""
        return self._forward(np.asarray(x, self.dtype), keep=False)[0]

    def _forward(self, x, keep=True):
        p, vals, caches = self.params, {self.model.input_name: x}, {}
        for node in self.model.nodes:
            xs = [vals[i] for i in node.inputs]
            vals[node.output], caches[node.name] = self._fwd(node, xs, p)
        return vals, caches

    def _fwd(self, node, xs, p):
        """(output, cache) of one node: its op file's dense forward (runtime/ops)."""
        return get_op(node.op).forward(node, xs, _getter(node, p))

    def _forward_backward(self, x, y):
        t0 = time.perf_counter()
        vals, caches = self._forward(np.asarray(x, self.dtype))
        logits = vals[self.model.output_name]
        loss, dlogits = self._loss(logits, y)
        t1 = time.perf_counter()
        grads = self._backward(vals, caches, dlogits)
        t2 = time.perf_counter()
        # numpy does error propagation and weight gradient together; report them as bp.
        return loss, grads, logits, {"fp": t1 - t0, "bp": t2 - t1, "wg": 0.0}

    def forward_backward_values(self, x, y):
        """(loss, grads, values, dvalues): every forward value and every gradient dL/dvalue."""
        vals, caches = self._forward(np.asarray(x, self.dtype))
        loss, dlogits = self._loss(vals[self.model.output_name], y)
        seen: Dict[str, np.ndarray] = {}
        grads = self._backward(vals, caches, dlogits, seen)
        return loss, grads, vals, seen

    def _backward(self, vals, caches, dlogits, seen=None):
        p, want = self.params, set(self.trainable)
        needed = self.model.needs_grad(self.trainable)
        dvals = {self.model.output_name: dlogits}
        grads: Dict[str, np.ndarray] = {}
        for node in reversed(self.model.nodes):
            d = dvals.pop(node.output, None)
            if d is None:
                continue
            if seen is not None:
                seen[node.output] = d
            need_dx = [needed.get(i, False) for i in node.inputs]
            dxs, pg = get_op(node.op).backward(node, d, caches[node.name], _getter(node, p), need_dx)
            for role, g in pg.items():
                name = node.params.get(role)
                if name in want:
                    grads[name] = grads[name] + g if name in grads else g.astype(self.dtype)
            for inp, dx, nd in zip(node.inputs, dxs, need_dx):
                if dx is not None and nd:
                    dvals[inp] = dvals[inp] + dx if inp in dvals else dx
        return grads


def _getter(node, p):
    """role -> the node's parameter (None when it has none in that role)."""
    return lambda role: p[node.params[role]] if role in node.params else None
