"""The dense numpy reference engine: the oracle every other engine must equal."""
from __future__ import annotations

import time
from typing import Dict

import numpy as np

from . import dense_ops as ops
from .base import Engine
from ..ir import ACTIVATION_OPS

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
        op, at, x = node.op, node.attrs, xs[0]
        get = lambda role: p[node.params[role]] if role in node.params else None  # noqa: E731
        if op == "conv":
            y, xp = ops.conv_forward(x, get("W"), get("B"), at)
            return y, (xp, x.shape)
        if op == "gemm":
            return ops.gemm_forward(x, get("W"), get("B"), at), x
        if op in ACTIVATION_OPS:
            a = ops.act_forward(op, x, at)
            return a, (x, a)
        if op == "add":
            return xs[0] + xs[1], None
        if op == "add_param":
            return x + get("B"), x.shape
        if op == "maxpool":
            return ops.maxpool_forward(x, at)
        if op == "avgpool":
            return ops.avgpool_forward(x, at)
        if op == "globalavgpool":
            y = x.mean(axis=(2, 3), keepdims=True)
            return (y if at["keepdims"] else y[:, :, 0, 0]), x.shape
        if op == "flatten":
            return x.reshape(x.shape[0], -1), x.shape
        if op == "reshape":
            return x.reshape(ops.reshape_target(at["shape"], x.shape)), x.shape
        if op == "batchnorm":
            return ops.batchnorm_forward(x, get("scale"), get("B"), get("mean"), get("var"), at["epsilon"])
        raise NotImplementedError(op)

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
            dxs, pg = self._bwd(node, d, caches[node.name], vals, p, need_dx[0])
            for role, g in pg.items():
                name = node.params.get(role)
                if name in want:
                    grads[name] = grads[name] + g if name in grads else g.astype(self.dtype)
            for inp, dx, nd in zip(node.inputs, dxs, need_dx):
                if dx is not None and nd:
                    dvals[inp] = dvals[inp] + dx if inp in dvals else dx
        return grads

    def _bwd(self, node, d, cache, vals, p, need_dx):
        op, at = node.op, node.attrs
        get = lambda role: p[node.params[role]] if role in node.params else None  # noqa: E731
        if op == "conv":
            xp, xshape = cache
            dx, dW, dB = ops.conv_backward(d, xp, xshape, get("W"), at, need_dx)
            return [dx], {"W": dW, "B": dB}
        if op == "gemm":
            dx, dW, dB = ops.gemm_backward(d, cache, get("W"), at, need_dx)
            return [dx], {"W": dW, "B": dB}
        if op in ACTIVATION_OPS:
            z, a = cache
            return [d * ops.act_derivative(op, z, a, at)], {}
        if op == "add":
            return [d, d], {}
        if op == "add_param":
            b = get("B")
            axes = tuple(range(d.ndim - b.ndim)) + tuple(i for i in range(d.ndim - b.ndim, d.ndim)
                                                          if b.shape[i - d.ndim + b.ndim] == 1)
            return [d], {"B": d.sum(axis=axes).reshape(b.shape)}
        if op == "maxpool":
            x = vals[node.inputs[0]]
            return [ops.maxpool_backward(d, cache, x.shape, at)], {}
        if op == "avgpool":
            x = vals[node.inputs[0]]
            return [ops.avgpool_backward(d, cache, x.shape, at)], {}
        if op == "globalavgpool":
            n, c, h, w = cache
            return [np.broadcast_to(d.reshape(n, c, 1, 1) / d.dtype.type(h * w), cache).astype(d.dtype)], {}
        if op in ("flatten", "reshape"):
            return [d.reshape(cache)], {}
        if op == "batchnorm":
            dx, dscale, dbias = ops.batchnorm_backward(d, cache, get("scale"))
            return [dx], {"scale": dscale, "B": dbias}
        raise NotImplementedError(op)
