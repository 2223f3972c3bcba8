"""resnet18-style and mnasnet-style torch modules whose eval-mode exports fold BatchNorm into the
convs and store equal folded tensors once, and the autograd oracle for such an export.

Only imported by tests that already skipped when torch is absent."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def cbr(cin, cout, k=3, stride=1, groups=1, relu=True):
    """conv (no bias) -> BatchNorm -> ReLU, as torchvision builds its blocks."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.c2 = cbr(cin, cout, stride=stride), cbr(cout, cout, relu=False)
        self.down = cbr(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        skip = x if self.down is None else self.down(x)
        return torch.relu(self.c2(self.c1(x)) + skip)


class ResNetStyle(nn.Module):
    """torchvision's resnet18 in miniature: a stem, two stages of two basic blocks, GAP, Linear."""

    def __init__(self, classes=5):
        super().__init__()
        self.stem = cbr(3, 8)
        self.stage1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 8, 1))
        self.stage2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(cbr(cin, mid, 1), cbr(mid, mid, 3, stride, groups=mid), cbr(mid, cout, 1, relu=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MnasNetStyle(nn.Module):
    """torchvision's mnasnet0_5 in miniature: stem, depthwise-separable conv, inverted residuals
    with depthwise 3x3 convs (one strided), a 1x1 head conv, spatial mean, Dropout, Linear."""

    def __init__(self, classes=5):
        super().__init__()
        self.layers = nn.Sequential(
            cbr(3, 8, stride=2), cbr(8, 8, 3, groups=8), cbr(8, 4, 1, relu=False),
            InvertedResidual(4, 6, 2, 3), InvertedResidual(6, 6, 1, 3), InvertedResidual(6, 6, 1, 3),
            cbr(6, 16, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


MODELS = {"resnet_style": (ResNetStyle, (3, 12, 12)), "mnasnet_style": (MnasNetStyle, (3, 16, 16))}


def build(name: str, seed: int = 0) -> nn.Module:
    """The module in eval mode. Every other BatchNorm keeps fresh statistics but a shared shift
    (beta 0.1), so the folded biases of one width are equal and the exporter stores them once;
    the others get random statistics, as a trained model has."""
    cls, _ = MODELS[name]
    torch.manual_seed(seed)
    module = cls().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for i, bn in enumerate(m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            if i % 2:
                bn.bias.fill_(0.1)
                continue
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return module


def fused(module: nn.Module) -> nn.Module:
    """A copy with every conv -> BatchNorm pair fused into one conv with a bias: its parameters are
    the tensors an eval-mode export writes."""
    out = copy.deepcopy(module)
    for seq in (m for m in out.modules() if isinstance(m, nn.Sequential)):
        if len(seq) >= 2 and isinstance(seq[0], nn.Conv2d) and isinstance(seq[1], nn.BatchNorm2d):
            seq[0], seq[1] = fuse_conv_bn_eval(seq[0], seq[1]), nn.Identity()
    for p in out.parameters():
        p.requires_grad_(True)      # a fused bias of a bias-free conv comes out frozen
    return out


def tied_oracle(module: nn.Module, params: dict, x: np.ndarray, y: np.ndarray):
    """(loss, {initializer: gradient}, {initializer: [torch parameter names]}) by autograd on the
    fused module. Each fused parameter is matched to the one initializer of its shape and values;
    an initializer that several parameters match is a tie the exporter made, and its gradient is
    the sum of theirs."""
    net = fused(module)
    net.zero_grad()
    loss = nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    grads, owners = {}, {}
    for pname, p in net.named_parameters():
        value = p.detach().numpy()
        match = [k for k, v in params.items() if v.shape == value.shape and np.allclose(v, value, rtol=1e-5, atol=1e-6)]
        assert len(match) == 1, f"{pname}: {len(match)} initializers match its values ({match[:4]})"
        k = match[0]
        grads[k] = grads.get(k, 0) + p.grad.numpy().astype(np.float64)
        owners.setdefault(k, []).append(pname)
    return loss.item(), grads, owners
