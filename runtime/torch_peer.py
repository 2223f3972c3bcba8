"""The IR run by PyTorch: the benchmark peer and a test oracle. torch is optional and never
imported by the runtime itself; only `edgetune bench` and the tests call this."""
from __future__ import annotations

import numpy as np

from .engines.dense_ops import reshape_target


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
        at, x = n.attrs, a[0]
        if n.op == "conv":
            pt, pl, pb, pr = at["pads"]
            if (pt, pl) != (pb, pr):
                x = F.pad(x, (pl, pr, pt, pb))
                pt = pl = 0
            return F.conv2d(x, p["W"], p.get("B"), at["stride"], (pt, pl), at["dilation"], at["group"])
        if n.op == "gemm":
            w = p["W"] if at["transB"] else p["W"].t()
            y = F.linear(x, w) * at["alpha"]
            return y + at["beta"] * p["B"] if "B" in p else y
        simple = {"relu": F.relu, "hardswish": F.hardswish, "sigmoid": t.sigmoid}
        if n.op in simple:
            return simple[n.op](x)
        if n.op == "clip":
            return F.hardtanh(x, at["min"], at["max"])
        if n.op == "hardsigmoid":
            return t.clamp(at["alpha"] * x + at["beta"], 0, 1)
        if n.op == "leakyrelu":
            return F.leaky_relu(x, at["alpha"])
        if n.op == "add":
            return a[0] + a[1]
        if n.op == "add_param":
            return x + p["B"]
        if n.op in ("maxpool", "avgpool"):
            pt, pl, pb, pr = at["pads"]
            if n.op == "maxpool":
                return F.max_pool2d(x, at["kernel"], at["stride"], (pt, pl), ceil_mode=bool(at["ceil_mode"]))
            return F.avg_pool2d(x, at["kernel"], at["stride"], (pt, pl), ceil_mode=bool(at["ceil_mode"]),
                                count_include_pad=bool(at["count_include_pad"]))
        if n.op == "globalavgpool":
            return x.mean(dim=(2, 3), keepdim=bool(at["keepdims"]))
        if n.op == "flatten":
            return x.flatten(1)
        if n.op == "reshape":
            return x.reshape(reshape_target(at["shape"], tuple(x.shape)))
        if n.op == "batchnorm":
            return F.batch_norm(x, p["mean"].detach(), p["var"].detach(), p["scale"], p["B"], False, 0.0,
                                at["epsilon"])
        raise NotImplementedError(n.op)

    def loss_and_grads(self, x, y, trainable):
        """Cross-entropy forward + backward; returns (loss, {name: grad})."""
        t = self.torch
        for v in self.params.values():
            v.grad = None
        out = self.forward(t.from_numpy(np.asarray(x, np.float32)))
        loss = t.nn.functional.cross_entropy(out, t.from_numpy(np.asarray(y, np.int64)))
        loss.backward()
        return loss.item(), {k: self.params[k].grad.numpy() for k in trainable if self.params[k].grad is not None}
