"""Small torch models covering the supported ops, exported with both torch exporters.
Only imported by tests that already skipped when torch is absent."""
from __future__ import annotations

import io
import contextlib
import warnings

import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(20, 32), nn.Linear(32, 16), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))))


class StridedRelu6CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=0, dilation=1)
        self.c3 = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6 * 3 * 3, 4)
        self.act = nn.ReLU6()

    def forward(self, x):
        x = self.act(self.c1(x))
        x = self.act(self.c2(x))
        x = self.act(self.c3(x))
        return self.fc(torch.flatten(x, 1))


class DepthwiseHardswishCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)
        self.act = nn.Hardswish()

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.pool(self.act(self.dw(x)))
        x = self.act(self.pw(x))
        return self.fc(torch.flatten(self.gap(x), 1))


class ResidualLeaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.act = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.act(self.stem(x))
        y = self.b(self.act(self.a(x)))
        x = self.act(x + y)
        return self.fc(x.mean(dim=(2, 3)))


class MixedOps(nn.Module):
    """AvgPool, HardSigmoid, Sigmoid and a plain ReLU conv."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(6 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.c1(x)))
        x = nn.functional.hardsigmoid(self.c2(x))
        return self.fc2(torch.sigmoid(self.fc1(torch.flatten(x, 1))))


class ViewSame(nn.Module):
    """What a user's own CNN export often looks like: padding="same" and x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding="same")
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.view(x.size(0), -1))


class BatchNormSoftmax(nn.Module):
    """BatchNormalization (eval, non-trivial running statistics) where the exporters cannot fold it
    into a conv (after a pool), a padded ceil-mode max-pool, a padded average pool, and Softmax
    as the last node (edgetune trains the logits before it: `logits` is the oracle's output)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 5, 3)
        self.fc = nn.Linear(5 * 2 * 2, 4)
        g = torch.Generator().manual_seed(1)
        self.bn.running_mean.copy_(torch.randn(6, generator=g) * 0.3)
        self.bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)

    def logits(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.c1(x)), 3, 2, padding=1, ceil_mode=True)
        x = torch.relu(self.c2(self.bn(x)))
        x = nn.functional.avg_pool2d(x, 2, 2, padding=1, count_include_pad=False)
        return self.fc(torch.flatten(x, 1))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


ZOO = {
    "mlp_relu": (MLP, (1, 4, 5)),
    "cnn_relu6_strided": (StridedRelu6CNN, (3, 13, 13)),
    "dw_hardswish_maxpool_gap": (DepthwiseHardswishCNN, (3, 12, 12)),
    "residual_add_leaky": (ResidualLeaky, (3, 9, 9)),
    "mixed_avgpool_sigmoid": (MixedOps, (2, 8, 8)),
    "view_same": (ViewSame, (1, 8, 8)),
    "bn_pools_softmax": (BatchNormSoftmax, (2, 9, 9)),
}


def build(name: str, seed: int = 0):
    """Instantiate a zoo model with deterministic weights; returns (module, input_chw)."""
    cls, chw = ZOO[name]
    torch.manual_seed(seed)
    return cls().eval(), chw


def export(module, chw, path, exporter: str, batch: str = "dynamic"):
    """Export with the TorchScript ('script') or torch.export-based ('dynamo') exporter.

    batch="dynamic" declares a symbolic batch; batch="fixed" is the most common user export:
    a batch-1 dummy input and nothing else, so the file's batch is fixed at 1."""
    x = torch.randn(2 if batch == "dynamic" else 1, *chw)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "script":
            dyn = {"dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}} if batch == "dynamic" else {}
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"], **dyn)
        else:
            dyn = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if batch == "dynamic" else {}
            torch.onnx.export(module, (x,), str(path), dynamo=True, input_names=["input"],
                              output_names=["logits"], **dyn)
    return path


def torch_loss_and_grads(module, x, y, loss="cross_entropy"):
    """The autograd oracle: loss and {param_name: grad}."""
    module.zero_grad()
    # a model ending in Softmax is trained on the logits before it (the loss applies its own)
    out = (module.logits if hasattr(module, "logits") else module)(torch.from_numpy(x))
    if loss == "cross_entropy":
        value = nn.functional.cross_entropy(out, torch.from_numpy(y))
    else:
        target = nn.functional.one_hot(torch.from_numpy(y), out.shape[1]).float()
        value = nn.functional.mse_loss(out, target)
    value.backward()
    return value.item(), {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
