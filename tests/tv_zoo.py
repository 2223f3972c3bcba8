"""Real torchvision architectures, built small, for the zoo tests (issue 19).

torchvision's model definitions are plain Python, but `import torchvision` also registers its
compiled detection ops, and the PyPI wheel's ops do not load beside the CPU build of torch.
`models()` imports the `torchvision.models` package without running torchvision's own
`__init__` (a package module whose search path is torchvision's folder), so the definitions
load and the compiled ops are never touched. Only the model classes are used.

Each family is built with the classes torchvision ships, at a width and depth small enough
for the test suite (random init), and prepared for export so that the ONNX file's
parameters correspond to the module's (see `prepare`)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import partial

import torch
import torch.nn as nn


def models():
    """torchvision.models, imported without torchvision's compiled ops."""
    if "torchvision.models" in sys.modules:
        return sys.modules["torchvision.models"]
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("torchvision is not installed")
        pkg = types.ModuleType("torchvision")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["torchvision"] = pkg
    return importlib.import_module("torchvision.models")


def _mobilenet_v3_small(classes):
    from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3

    conf = partial(InvertedResidualConfig, width_mult=0.25)
    # the small network's first blocks: SE + ReLU, no SE + ReLU, SE + hard-swish (stride 1 and 2)
    setting = [conf(16, 3, 16, 16, True, "RE", 2, 1), conf(16, 3, 72, 24, False, "RE", 2, 1),
               conf(24, 5, 96, 40, True, "HS", 2, 1), conf(40, 5, 120, 40, True, "HS", 1, 1)]
    return MobileNetV3(setting, last_channel=32, num_classes=classes)


def _efficientnet_b0(classes):
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    conf = partial(MBConvConfig, width_mult=0.25, depth_mult=1.0)
    setting = [conf(1, 3, 1, 32, 16, 1), conf(6, 3, 2, 16, 24, 2), conf(6, 5, 2, 24, 40, 1)]
    return EfficientNet(setting, dropout=0.2, num_classes=classes, last_channel=48)


def _squeezenet1_1(classes):
    tm = models()
    return tm.squeezenet1_1(num_classes=classes)


def _shufflenet_v2(classes):
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    return ShuffleNetV2([1, 2, 1], [8, 16, 32, 48, 64], num_classes=classes)


def _densenet(classes):
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=classes)


def _resnet18(classes):
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=classes)


def _mobilenet_v2(classes):
    tm = models()
    return tm.mobilenet_v2(num_classes=classes, width_mult=0.25,
                           inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 1, 2]])


def _mnasnet(classes):
    tm = models()
    return tm.mnasnet0_5(num_classes=classes)


models()   # importing this module fails (and requires.need skips or fails) without torchvision

# name -> (builder, input (C, H, W)); the family it stands for is in the name
FAMILIES = {
    "mobilenet_v3_small": (_mobilenet_v3_small, (3, 32, 32)),
    "efficientnet_b0": (_efficientnet_b0, (3, 32, 32)),
    "squeezenet1_1": (_squeezenet1_1, (3, 32, 32)),
    "shufflenet_v2": (_shufflenet_v2, (3, 32, 32)),
    "densenet": (_densenet, (3, 32, 32)),
    "resnet18": (_resnet18, (3, 32, 32)),
    "mobilenet_v2": (_mobilenet_v2, (3, 32, 32)),
    "mnasnet0_5": (_mnasnet, (3, 32, 32)),
}


def prepare(module: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode, with parameters that map one to one onto the exported file's initializers.

    The exporters fold a BatchNorm that follows a Conv into it, and deduplicate initializers
    whose values are equal (torchvision zero-initialises biases; a fresh BatchNorm has weight 1,
    bias 0, mean 0, var 1). So every bias and every BatchNorm gets random values first, and each
    Conv -> BatchNorm pair is then folded here, in torch (torch.nn.utils.fusion): the exporters
    have nothing left to fold, the oracle is autograd through this very module, and the
    remaining BatchNorms (after a Concat or a pool, where nothing can fold them) train their
    scale and bias with frozen statistics, as edgetune does. The zoo tests check that the
    file's initializers are exactly the module's parameters."""
    g = torch.Generator().manual_seed(seed + 99)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.copy_(torch.randn(bias.shape, generator=g) * 0.1)
    module.eval()
    _fold_conv_bn(module)
    return module


def _fold_conv_bn(module: nn.Module) -> None:
    """Fold each BatchNorm2d registered right after a Conv2d of its width into that Conv2d: in
    torchvision that order is the data flow (Sequential blocks, ResNet's conv1/bn1, DenseNet's
    conv1/norm2). A pair this misses leaves a file whose initializers differ from the module's
    parameters, which the zoo tests report."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in list(module.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
                fused = fuse_conv_bn_eval(conv, bn)
                fused.bias.requires_grad_(True)   # it copies requires_grad from the conv's bias, often None
                parent._modules[a] = fused
                parent._modules[b] = nn.Identity()


def build(name: str, classes: int = 10, seed: int = 0):
    """(module prepared for export, input (C, H, W)) of a zoo family."""
    fn, chw = FAMILIES[name]
    torch.manual_seed(seed)
    return prepare(fn(classes), seed), chw
