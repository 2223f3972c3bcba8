"""The IR run by PyTorch: the benchmark peer and a test oracle. torch is optional and never
imported by the runtime itself; only `edgetune bench` and the tests call this."""
from __future__ import annotations

import numpy as np

from .ops import get as get_op


def available() -> bool:
    """Whether torch can be imported."""
    try:
        import torch  # noqa: F401  (probe only)
    except ImportError:
        return False
    return True


class TorchPeer:
    """Forward and backward of an IR model with torch.nn.functional, weights as leaf tensors."""

    def __init__(self, model, params, threads=None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch, self.model = torch, model
        self.params = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}

    def forward(self, x):
        F, t = self.torch.nn.functional, self.torch
        vals = {self.model.input_name: x}
        for n in self.model.nodes:
            a = [vals[i] for i in n.inputs]
            p = {r: self.params[v] for r, v in n.params.items()}
            vals[n.output] = self._op(F, t, n, a, p)
        return vals[self.model.output_name]

    def _op(self, F, t, n, a, p):
        """One node in torch: its op file's torch form (runtime/ops)."""
        return get_op(n.op).torch(F, t, n, a, p)

    def loss_and_grads(self, x, y, trainable):
        """Cross-entropy forward + backward; returns (loss, {name: grad})."""
        t = self.torch
        for v in self.params.values():
            v.grad = None
        out = self.forward(t.from_numpy(np.asarray(x, np.float32)))
        loss = t.nn.functional.cross_entropy(out, t.from_numpy(np.asarray(y, np.int64)))
        loss.backward()
        return loss.item(), {k: self.params[k].grad.numpy() for k in trainable if self.params[k].grad is not None}
