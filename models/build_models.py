#!/usr/bin/env python3
"""Build the bundled models and datasets of ``edgetune.models``.

Run offline by a developer (never at runtime)::

    python models/build_models.py            # build everything, ~2-4 min on 2 cores

It needs torch, onnx, onnxruntime, scikit-learn and scipy (a dependency of
scikit-learn). The installed runtime needs none of them: ``models/__init__.py``
only reads the files written here with numpy and json.

What it writes into the folder that holds this script:

* ``digits_source.npz``  -- scikit-learn's 8x8 handwritten digits, scaled to [0, 1]
* ``digits_shifted.npz`` -- the other half of the digits after a deterministic
  "new writer / new sensor" shift (slant, thicker strokes, lower sensor gain,
  raised black level, noise)
* ``digits32_color.npz`` -- a 32x32 RGB version of the digits for the bench models
* ``digits_mlp.onnx``, ``digits_cnn.onnx`` -- pretrained on the source domain only
* ``bench_vgg_relu.onnx``, ``bench_resnet_relu.onnx``,
  ``bench_mobilenet_relu6.onnx``, ``bench_cnn_hardswish.onnx`` -- trained on
  digits32_color, for speed measurements with realistic activation sparsity
* ``bench_mobilenetv3_se.onnx`` -- MobileNetV3-small-style (hard-swish, ReLU,
  squeeze-and-excitation with hard-sigmoid gates), trained on the bundled
  digits32_color split; ``python models/build_models.py --only
  bench_mobilenetv3_se`` rebuilds it (and its catalog entry) from the bundled
  files alone
* ``catalog.json`` -- every model and dataset with its measured accuracies

Every ``.npz`` holds ``x`` (float32, NCHW), ``y`` (int64, 0..9), ``x_val``, ``y_val``.

All randomness comes from fixed seeds. The run checks itself: every exported
model passes ``onnx.checker``, uses only the allowed ONNX ops and matches torch
under onnxruntime to 1e-4; the domain shift is verified by fine-tuning both
digits models on the shifted training split with torch.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent
SEED = 0

# Ops the bundled models may contain (the runtime's core set, and the gates of a SE block).
ALLOWED_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "HardSwish", "MaxPool",
    "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape",
    "BatchNormalization", "Identity", "Constant", "HardSigmoid", "Mul",
}

# --- digits split ---------------------------------------------------------------
N_SOURCE = 898            # first half of a fixed permutation of the 1797 digits
N_SOURCE_VAL = 200
N_SHIFTED_VAL = 300       # the remaining 899 digits: 599 train + 300 val

# --- the domain shift (all deterministic) --------------------------------------
SHIFT = {
    "shear": 0.4,         # slant: row r samples column c + shear*(r - 3.5)
    "thicken": 0.6,       # stroke thickening: max(img, thicken * 1x2 grey dilation)
    "gain": 0.8,          # sensor gain
    "offset": 0.06,       # sensor black level
    "noise_std": 0.05,    # additive Gaussian sensor noise (seed SHIFT_NOISE_SEED)
}
SHIFT_NOISE_SEED = 1

# --- pretraining / fine-tuning check recipes ----------------------------------
DIGITS_PRETRAIN = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.01,
                   "batch_size": 32, "epochs": 30}
FINETUNE_CHECK = {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9,
                  "batch_size": 32, "epochs": 8}

# --- digits32_color -----------------------------------------------------------
C32_STORE_TRAIN = 600     # stored training images (the bench needs a few batches)
C32_STORE_VAL = 200       # stored validation images (bench accuracy is measured here)
C32_POOL_VAL_DIGITS = 300  # last 300 digits of the permutation make the val images
C32_TRAIN_COPIES = 2      # coloured variants per training digit used in pretraining
BENCH_PRETRAIN = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
                  "batch_size": 64, "epochs": 6, "schedule": "cosine"}
# bench_mobilenetv3_se trains on the stored digits32_color split only (600 images), so that it can
# be rebuilt from the bundled files: more epochs over fewer images
MNV3_NAME = "bench_mobilenetv3_se"
MNV3_PRETRAIN = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4,
                 "batch_size": 32, "epochs": 16, "schedule": "cosine"}

# --- what `edgetune finetune MODEL` uses when --lr is not given -----------------
# Chosen with `edgetune finetune MODEL --epochs 4 --lr LR` for LR in 0.02, 0.005,
# 0.002, 0.0005 on each model's default data (SGD, momentum 0.9, batch 32, seed 0):
# the largest rate with which every epoch validated at least as well as the starting
# model (models/README.md has the measured table).
FINETUNE_DEFAULTS = {"digits_mlp": 0.02, "digits_cnn": 0.02, "bench_vgg_relu": 0.0005,
                     "bench_resnet_relu": 0.002, "bench_mobilenet_relu6": 0.005, "bench_cnn_hardswish": 0.0005,
                     MNV3_NAME: 0.002}
FINETUNE_DEFAULTS_HOW = ("edgetune finetune MODEL --epochs 4 --lr LR, LR in 0.02/0.005/0.002/0.0005, SGD "
                         "momentum 0.9, batch 32, seed 0, default data: the largest LR with which every epoch "
                         "validated at least as well as the starting model")


def log(*a):
    print(*a, flush=True)


# ==============================================================================
# data
# ==============================================================================
def load_digits01():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)        # (1797, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    perm = np.random.RandomState(SEED).permutation(len(x))
    return x, y, perm


def apply_shift(images: np.ndarray, seed: int = SHIFT_NOISE_SEED) -> np.ndarray:
    """Deterministic new-writer / new-sensor shift of (N, 8, 8) images in [0, 1]."""
    from scipy import ndimage
    rng = np.random.RandomState(seed)
    s = SHIFT["shear"]
    mat = np.array([[1.0, 0.0], [s, 1.0]])
    off = np.array([0.0, -s * 3.5])
    foot = np.array([[1, 1]])
    out = np.empty_like(images, dtype=np.float32)
    for i, im in enumerate(images):
        a = ndimage.affine_transform(im.astype(np.float64), mat, offset=off,
                                     order=1, mode="constant", cval=0.0)
        a = np.maximum(a, SHIFT["thicken"] * ndimage.grey_dilation(a, footprint=foot))
        a = SHIFT["gain"] * a + SHIFT["offset"] + rng.normal(0.0, SHIFT["noise_std"], a.shape)
        out[i] = np.clip(a, 0.0, 1.0)
    return out


def make_color32(images8: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """8x8 grey digits -> (N, 3, 32, 32) colour images, 8-bit quantised, as float32."""
    import torch
    import torch.nn.functional as F
    n = len(images8)
    up = F.interpolate(torch.from_numpy(images8[:, None].astype(np.float32)),
                       size=(32, 32), mode="bilinear", align_corners=False)
    up = up.clamp(0, 1).numpy()                      # (N, 1, 32, 32) ink mask
    out = np.empty((n, 3, 32, 32), np.float32)
    for i in range(n):
        # random translation by up to 3 px, zero (background) fill
        dy, dx = rng.randint(-3, 4, size=2)
        m = np.zeros((32, 32), np.float32)
        src = up[i, 0]
        ys, yd = (slice(0, 32 - dy), slice(dy, 32)) if dy >= 0 else (slice(-dy, 32), slice(0, 32 + dy))
        xs, xd = (slice(0, 32 - dx), slice(dx, 32)) if dx >= 0 else (slice(-dx, 32), slice(0, 32 + dx))
        m[yd, xd] = src[ys, xs]
        # random dark background colour, random bright foreground (ink) colour
        bg = rng.uniform(0.0, 0.45, 3)
        fg = rng.uniform(0.55, 1.0, 3)
        img = bg[:, None, None] * (1 - m) + fg[:, None, None] * m
        img = img + rng.normal(0, 0.03, img.shape)
        out[i] = np.round(np.clip(img, 0, 1) * 255) / 255   # like an 8-bit sensor
    return out.astype(np.float32)


def save_npz(name, x, y, x_val, y_val):
    path = OUT_DIR / f"{name}.npz"
    arrs = dict(x=np.ascontiguousarray(x, np.float32), y=np.asarray(y, np.int64),
                x_val=np.ascontiguousarray(x_val, np.float32), y_val=np.asarray(y_val, np.int64))
    np.savez_compressed(path, **arrs)
    log(f"  wrote {path.name}: x{arrs['x'].shape} x_val{arrs['x_val'].shape} "
        f"{path.stat().st_size / 1e6:.2f} MB")
    return path


# ==============================================================================
# models
# ==============================================================================
def build_torch_models():
    import torch
    import torch.nn as nn

    class DigitsMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 128)
            self.fc2 = nn.Linear(128, 64)
            self.fc3 = nn.Linear(64, 10)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = torch.flatten(x, 1)
            x = self.relu(self.fc1(x))
            x = self.relu(self.fc2(x))
            return self.fc3(x)

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
            self.fc = nn.Linear(32 * 4 * 4, 10)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.relu(self.conv1(x))
            x = self.relu(self.conv2(x))
            x = self.relu(self.conv3(x))
            return self.fc(torch.flatten(x, 1))

    def cbr(cin, cout, act, stride=1, groups=1, k=3, bn=True):
        layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(act())
        return layers

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            R = nn.ReLU
            self.features = nn.Sequential(
                *cbr(3, 32, R), *cbr(32, 32, R), nn.MaxPool2d(2),
                *cbr(32, 64, R), *cbr(64, 64, R), nn.MaxPool2d(2),
                *cbr(64, 128, R), nn.MaxPool2d(2))
            self.fc1 = nn.Linear(128 * 4 * 4, 128)
            self.fc2 = nn.Linear(128, 10)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = torch.flatten(self.features(x), 1)
            return self.fc2(self.relu(self.fc1(x)))

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu1 = nn.ReLU()
            self.relu2 = nn.ReLU()
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            skip = x if self.proj is None else self.proj(x)
            return self.relu2(out + skip)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(*cbr(3, 32, nn.ReLU, stride=2))      # 32 x 16 x 16
            self.blocks = nn.Sequential(BasicBlock(32, 32, 1), BasicBlock(32, 32, 1),
                                        BasicBlock(32, 64, 2), BasicBlock(64, 64, 1))  # 64 x 8 x 8
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.pool(self.blocks(self.stem(x)))
            return self.fc(torch.flatten(x, 1))

    class MobileNet(nn.Module):
        def __init__(self):
            super().__init__()
            R6 = nn.ReLU6

            def dws(cin, cout, stride):
                return [*cbr(cin, cin, R6, stride=stride, groups=cin),
                        *cbr(cin, cout, R6, k=1)]
            self.features = nn.Sequential(
                *cbr(3, 32, R6, stride=2),          # 16x16
                *dws(32, 64, 1),
                *dws(64, 64, 2),                    # 8x8
                *dws(64, 128, 1),
                *dws(128, 128, 2),                  # 4x4
                *dws(128, 128, 1))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    class HardswishCNN(nn.Module):
        def __init__(self):
            super().__init__()
            H = nn.Hardswish
            self.features = nn.Sequential(
                *cbr(3, 32, H), nn.MaxPool2d(2),
                *cbr(32, 64, H), nn.MaxPool2d(2),
                *cbr(64, 64, H), nn.MaxPool2d(2),
                *cbr(64, 128, H))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    class SqueezeExcite(nn.Module):
        """MobileNetV3's SE block: mean over H, W, 1x1 conv + ReLU, 1x1 conv, hard-sigmoid, x * gate."""

        def __init__(self, c, r):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)
            self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

        def forward(self, x):
            s = self.gate(self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
            return x * s

    class InvertedResidual(nn.Module):
        """MobileNetV3's block: expand 1x1, depthwise kxk, optional SE, project 1x1, skip when it fits."""

        def __init__(self, cin, k, exp, cout, se, act, stride):
            super().__init__()
            layers = [] if exp == cin else cbr(cin, exp, act, k=1)
            layers += cbr(exp, exp, act, stride=stride, groups=exp, k=k)
            if se:
                layers.append(SqueezeExcite(exp, max(8, exp // 4)))
            layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.block = nn.Sequential(*layers)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.skip else y

    class MobileNetV3Small(nn.Module):
        """MobileNetV3-small's structure at 32x32: hard-swish stem, ReLU blocks, then hard-swish
        blocks with SE, a 1x1 head conv, and torchvision's classifier (Linear, hard-swish, Linear)."""

        def __init__(self):
            super().__init__()
            RE, HS = nn.ReLU, nn.Hardswish
            self.features = nn.Sequential(
                *cbr(3, 16, HS, stride=2),                          # 16x16
                InvertedResidual(16, 3, 16, 16, True, RE, 1),
                InvertedResidual(16, 3, 64, 24, False, RE, 2),     # 8x8
                InvertedResidual(24, 3, 72, 24, False, RE, 1),
                InvertedResidual(24, 5, 96, 40, True, HS, 2),      # 4x4
                InvertedResidual(40, 5, 160, 40, True, HS, 1),
                InvertedResidual(40, 5, 160, 48, True, HS, 1),
                *cbr(48, 144, HS, k=1))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(144, 128), nn.Hardswish(), nn.Linear(128, 10))

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    return {"digits_mlp": DigitsMLP, "digits_cnn": DigitsCNN, "bench_vgg_relu": VGG,
            "bench_resnet_relu": ResNet, "bench_mobilenet_relu6": MobileNet,
            "bench_cnn_hardswish": HardswishCNN, MNV3_NAME: MobileNetV3Small}


def train(model, x, y, recipe, seed, log_prefix="", x_val=None, y_val=None):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if recipe["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe.get("momentum", 0.0))
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe.get("weight_decay", 0.01))
    bs, epochs = recipe["batch_size"], recipe["epochs"]
    steps = epochs * ((len(xt) + bs - 1) // bs)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
             if recipe.get("schedule") == "cosine" else None)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        tot, n = 0.0, 0
        for i in range(0, len(xt), bs):
            idx = perm[i:i + bs]
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        if log_prefix:
            msg = f"{log_prefix} epoch {ep + 1}/{epochs} loss {tot / n:.4f}"
            if x_val is not None:
                msg += f" val_acc {torch_acc(model, x_val, y_val):.4f}"
            log(msg)
    model.eval()
    return model


def torch_acc(model, x, y):
    import torch
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def export_and_check(model, name, input_shape, x_check):
    """Export with the TorchScript exporter, check ops, checker and ORT vs torch."""
    import onnx
    import onnxruntime as ort
    import torch
    path = OUT_DIR / f"{name}.onnx"
    model.eval()
    dummy = torch.zeros((1,) + tuple(input_shape[1:]), dtype=torch.float32)
    torch.onnx.export(model, dummy, str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    ops = [n.op_type for n in m.graph.node]
    bad = sorted(set(ops) - ALLOWED_OPS)
    assert not bad, f"{name}: ops outside the allowed set: {bad}"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x_check})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x_check)).numpy()
    diff = float(np.max(np.abs(got - ref)))
    assert diff < 1e-4, f"{name}: onnxruntime vs torch max abs diff {diff}"
    uniq = sorted(set(ops))
    counts = {op: ops.count(op) for op in uniq}
    log(f"  exported {path.name} ({path.stat().st_size / 1e6:.2f} MB), ops {counts}, "
        f"ort-vs-torch max abs diff {diff:.2e}")
    return path, counts, diff


def ort_acc(path, x, y, batch=256):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = np.concatenate([sess.run(["logits"], {"input": x[i:i + batch]})[0].argmax(1)
                           for i in range(0, len(x), batch)])
    return float((pred == y).mean())


def activation_sparsity(model, x):
    """Fraction of exact zeros in the output of each ReLU / ReLU6 / Hardswish module."""
    import torch
    import torch.nn as nn
    stats, hooks = [], []
    for mname, mod in model.named_modules():
        if isinstance(mod, (nn.ReLU, nn.ReLU6, nn.Hardswish)):
            def hook(_m, _i, out, mname=mname):
                stats.append((mname, float((out == 0).float().mean())))
            hooks.append(mod.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    return stats


# ==============================================================================
# main
# ==============================================================================
def main():
    """Build every bundled dataset and model, check them, and write catalog.json (about 15 minutes)."""
    import torch

    t0 = time.time()
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    ctors = build_torch_models()
    catalog = {"version": 1,
               "generated_by": "models/build_models.py",
               "torch_version": torch.__version__,
               "models": [], "datasets": []}
    log("[1/4] digits datasets")
    x8, y8, perm = load_digits01()
    src, sh = build_digits_data(x8, y8, perm, catalog)
    log("[2/4] digits models (pretrain on source, check the shift by fine-tuning)")
    build_digits_models(ctors, src, sh, catalog)
    log("[3/4] digits32_color dataset")
    c32 = build_color32(x8, y8, perm, catalog)
    log("[4/4] bench models (trained on digits32_color)")
    build_bench_models(ctors, c32, catalog)
    build_mobilenetv3(ctors, c32, catalog)
    write_catalog(catalog, t0)
    return 0


def main_only(name: str) -> int:
    """Rebuild one model that needs only the bundled files (bench_mobilenetv3_se) and its entry
    in catalog.json; every other file stays as it is."""
    import torch

    if name != MNV3_NAME:
        log(f"--only: only {MNV3_NAME} is built from the bundled files; the others need the full build")
        return 2
    t0 = time.time()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    catalog = json.loads((OUT_DIR / "catalog.json").read_text())
    with np.load(OUT_DIR / "digits32_color.npz") as f:
        c32 = {k: f[k] for k in ("x", "y", "x_val", "y_val")}
    catalog["models"] = [m for m in catalog["models"] if m["name"] != name]
    build_mobilenetv3(build_torch_models(), c32, catalog)
    write_catalog(catalog, t0)
    return 0


def build_mobilenetv3(ctors, c32, catalog):
    """Train bench_mobilenetv3_se on the stored digits32_color split and record it like the other bench models."""
    import torch

    tb = time.time()
    seed = SEED + 20
    torch.manual_seed(seed)
    model = ctors[MNV3_NAME]()
    train(model, c32["x"], c32["y"], MNV3_PRETRAIN, seed=seed, log_prefix=f"  {MNV3_NAME}",
          x_val=c32["x_val"], y_val=c32["y_val"])
    path, ops, diff = export_and_check(model, MNV3_NAME, [None, 3, 32, 32], c32["x_val"][:32])
    acc = ort_acc(path, c32["x_val"], c32["y_val"])
    sp = activation_sparsity(model, c32["x_val"][:32])
    mean_sp = float(np.mean([s for _, s in sp]))
    log(f"  {MNV3_NAME}: digits32_color val acc {acc:.4f}; activation zeros per layer "
        f"{[round(s, 3) for _, s in sp]}, mean {mean_sp:.3f}; {time.time() - tb:.0f}s")
    assert acc > 0.85, f"{MNV3_NAME}: val acc {acc} <= 0.85"
    catalog["models"].append(catalog_entry(
        MNV3_NAME, path, BENCH_DESC[MNV3_NAME], model, ops, diff, [None, 3, 32, 32], "digits32_color",
        dict(MNV3_PRETRAIN, seed=seed, loss="cross_entropy",
             data=f"digits32_color, the {len(c32['x'])} stored training images"),
        accuracy={"digits32_color_val": round(acc, 4)},
        activation_sparsity={"measured_on": "first 32 digits32_color val images, eval mode (torch)",
                             "per_layer": {k: round(v, 4) for k, v in sp}, "mean": round(mean_sp, 4)}))


def build_digits_data(x8, y8, perm, catalog):
    """digits_source (the pretraining domain) and digits_shifted (the new writer); returns both splits."""
    src_idx, sh_idx = perm[:N_SOURCE], perm[N_SOURCE:]
    n_src_tr = N_SOURCE - N_SOURCE_VAL
    xs, ys = x8[src_idx][:, None], y8[src_idx]
    src = dict(x=xs[:n_src_tr], y=ys[:n_src_tr], x_val=xs[n_src_tr:], y_val=ys[n_src_tr:])
    xsh = apply_shift(x8[sh_idx])[:, None]
    ysh = y8[sh_idx]
    n_sh_tr = len(sh_idx) - N_SHIFTED_VAL
    sh = dict(x=xsh[:n_sh_tr], y=ysh[:n_sh_tr], x_val=xsh[n_sh_tr:], y_val=ysh[n_sh_tr:])
    p_src = save_npz("digits_source", **src)
    p_sh = save_npz("digits_shifted", **sh)
    arrays = {"x": "float32 (N,1,8,8) in [0,1]", "y": "int64 0..9", "x_val": "float32 (N,1,8,8)",
              "y_val": "int64 0..9"}
    catalog["datasets"] += [
        {"name": "digits_source", "file": p_src.name,
         "description": "scikit-learn's 8x8 handwritten digits (load_digits), pixel/16 -> [0,1]; "
                        f"the first {N_SOURCE} images of a fixed permutation (seed {SEED}). "
                        "The domain the digits models were pretrained on.",
         "input_shape": [None, 1, 8, 8], "num_classes": 10,
         "train_size": len(src["x"]), "val_size": len(src["x_val"]), "arrays": dict(arrays)},
        {"name": "digits_shifted", "file": p_sh.name,
         "description": "The other digits of the same permutation (disjoint from digits_source), "
                        "after a deterministic new-writer/new-sensor shift: slant (shear "
                        f"{SHIFT['shear']}), stroke thickening ({SHIFT['thicken']}), sensor gain "
                        f"{SHIFT['gain']} and black level {SHIFT['offset']}, Gaussian noise "
                        f"std {SHIFT['noise_std']}, clipped to [0,1]. The default fine-tuning data.",
         "shift": dict(SHIFT, noise_seed=SHIFT_NOISE_SEED),
         "input_shape": [None, 1, 8, 8], "num_classes": 10,
         "train_size": len(sh["x"]), "val_size": len(sh["x_val"]), "arrays": dict(arrays)},
    ]
    return src, sh


def catalog_entry(name, path, description, model, ops, diff, input_shape, default_data, pretraining, **own):
    """A model's catalog.json entry: the fields every model has, with `own` before the export check."""
    return {"name": name, "file": path.name, "description": description,
            "input_name": "input", "output_name": "logits",
            "input_shape": input_shape, "output_shape": [None, 10], "num_classes": 10,
            "default_data": default_data, "num_params": int(sum(p.numel() for p in model.parameters())),
            "onnx_ops": ops, "opset": 17, "exporter": "torch.onnx.export(dynamo=False)",
            "pretraining": pretraining, **own,
            "ort_max_abs_diff_vs_torch": diff,
            "finetune_defaults": {"optimizer": "sgd", "lr": FINETUNE_DEFAULTS[name],
                                  "chosen_by": FINETUNE_DEFAULTS_HOW}}


def build_digits_models(ctors, src, sh, catalog):
    """Pretrain digits_mlp and digits_cnn on the source digits; check that the shift hurts and that
    fine-tuning on the shifted digits repairs it."""
    digits_desc = {
        "digits_mlp": "MLP 64-128-64-10 with ReLU; flatten inside the model; input (N,1,8,8).",
        "digits_cnn": "Small CNN: Conv(1->16,3x3)+ReLU, Conv(16->32,3x3,stride 2)+ReLU, "
                      "Conv(32->32,3x3)+ReLU, Flatten, Linear(512->10).",
    }
    import torch

    for i, name in enumerate(["digits_mlp", "digits_cnn"]):
        torch.manual_seed(SEED + i)
        model = ctors[name]()
        train(model, src["x"], src["y"], DIGITS_PRETRAIN, seed=SEED + i)
        path, ops, diff = export_and_check(model, name, [None, 1, 8, 8], src["x_val"][:64])
        acc_src = ort_acc(path, src["x_val"], src["y_val"])
        acc_sh = ort_acc(path, sh["x_val"], sh["y_val"])
        acc_sh_train = ort_acc(path, sh["x"], sh["y"])
        ft = train(copy.deepcopy(model), sh["x"], sh["y"], FINETUNE_CHECK, seed=100 + i)
        acc_ft = torch_acc(ft, sh["x_val"], sh["y_val"])
        acc_ft_src = torch_acc(ft, src["x_val"], src["y_val"])
        log(f"  {name}: source val acc {acc_src:.4f} | shifted val acc {acc_sh:.4f} "
            f"(shifted train {acc_sh_train:.4f}) | after torch fine-tune on shifted train "
            f"({FINETUNE_CHECK['epochs']} epochs SGD lr {FINETUNE_CHECK['lr']} m 0.9 bs 32): "
            f"shifted val {acc_ft:.4f}, source val {acc_ft_src:.4f}")
        assert 0.50 <= acc_sh <= 0.78, f"{name}: shifted val acc {acc_sh} outside 0.50..0.78"
        assert acc_ft >= 0.92, f"{name}: fine-tuned shifted val acc {acc_ft} < 0.92"
        catalog["models"].append(catalog_entry(
            name, path, digits_desc[name], model, ops, diff, [None, 1, 8, 8], "digits_shifted",
            dict(DIGITS_PRETRAIN, data="digits_source (train split only)", seed=SEED + i, loss="cross_entropy"),
            accuracy={"digits_source_val": round(acc_src, 4), "digits_shifted_val": round(acc_sh, 4),
                      "digits_shifted_train": round(acc_sh_train, 4)},
            finetune_check=dict(FINETUNE_CHECK, data="digits_shifted (train split)", framework="torch",
                                seed=100 + i, digits_shifted_val_after=round(acc_ft, 4),
                                digits_source_val_after=round(acc_ft_src, 4))))


def build_color32(x8, y8, perm, catalog):
    """digits32_color: the bench models' data; returns the stored splits plus every generated image."""
    rng = np.random.RandomState(SEED + 32)
    pool_train = perm[:len(perm) - C32_POOL_VAL_DIGITS]
    pool_val = perm[len(perm) - C32_POOL_VAL_DIGITS:]
    x32_val = make_color32(x8[pool_val], rng)
    y32_val = y8[pool_val]
    x32_tr = np.concatenate([make_color32(x8[pool_train], rng) for _ in range(C32_TRAIN_COPIES)])
    y32_tr = np.concatenate([y8[pool_train]] * C32_TRAIN_COPIES)
    c32 = dict(x=x32_tr[:C32_STORE_TRAIN], y=y32_tr[:C32_STORE_TRAIN],
               x_val=x32_val[:C32_STORE_VAL], y_val=y32_val[:C32_STORE_VAL])
    p_c32 = save_npz("digits32_color", **c32)
    catalog["datasets"].append({
        "name": "digits32_color", "file": p_c32.name,
        "description": "32x32 RGB digits: the 8x8 digits upsampled bilinearly, shifted by up to "
                       "3 px, coloured per image with a random dark background colour (each channel "
                       "U(0,0.45)) and a random bright ink colour (each channel U(0.55,1)), "
                       "Gaussian noise std 0.03, quantised to 8-bit levels (k/255, stored as "
                       "float32). Validation images come from digits not used for training. "
                       "Data for the bench models.",
        "input_shape": [None, 3, 32, 32], "num_classes": 10,
        "train_size": len(c32["x"]), "val_size": len(c32["x_val"]),
        "note": f"The bench models were trained on {len(x32_tr)} generated training images "
                f"({C32_TRAIN_COPIES} colourings of {len(pool_train)} digits); the stored x/y are the "
                f"first {C32_STORE_TRAIN} of them, x_val/y_val the first {C32_STORE_VAL} of the "
                f"{len(x32_val)} generated validation images.",
        "arrays": {"x": "float32 (N,3,32,32) in [0,1]", "y": "int64 0..9",
                   "x_val": "float32 (N,3,32,32)", "y_val": "int64 0..9"},
    })
    return dict(c32, x_all=x32_tr, y_all=y32_tr, x_val_all=x32_val, y_val_all=y32_val)


BENCH_DESC = {
    "bench_vgg_relu": "VGG-style, ReLU: conv3x3 3-32, 32-32, maxpool, 32-64, 64-64, maxpool, "
                      "64-128, maxpool, Linear(2048->128)+ReLU, Linear(128->10). "
                      "BatchNorm folded into Conv at export.",
    "bench_resnet_relu": "ResNet-style, ReLU: stem conv3x3 stride 2 (3->32)+BN+ReLU (16x16), two "
                         "basic blocks at 32 ch, a stride-2 block to 64 ch with a 1x1 projection "
                         "(8x8), one more 64-ch block, global average pool, Linear(64->10). "
                         "Residual Add; BatchNorm folded into Conv at export.",
    "bench_mobilenet_relu6": "MobileNet-style, ReLU6 (Clip 0..6): stem conv3x3 stride 2 (3->32), "
                             "depthwise-separable blocks 32-64, 64-64 (s2), 64-128, 128-128 (s2), "
                             "128-128, global average pool, Linear(128->10). "
                             "BatchNorm folded into Conv at export.",
    "bench_cnn_hardswish": "Plain CNN, HardSwish: conv3x3 3-32, maxpool, 32-64, maxpool, 64-64, "
                           "maxpool, 64-128, global average pool, Linear(128->10). "
                           "BatchNorm folded into Conv at export.",
    MNV3_NAME: "MobileNetV3-small-style at 32x32: hard-swish stem conv3x3 s2 (3->16), inverted residual "
               "blocks (expand 1x1, depthwise kxk, SE with a hard-sigmoid gate, project 1x1) 16-16 (k3, SE, "
               "ReLU), 16-24 (k3, s2, ReLU), 24-24 (k3, ReLU), 24-40 (k5, s2, SE, hard-swish), 40-40 and "
               "40-48 (k5, SE, hard-swish), 1x1 conv 48-144 hard-swish, global average pool, "
               "Linear(144->128) hard-swish, Linear(128->10). BatchNorm folded into Conv at export.",
}


def build_bench_models(ctors, c32, catalog):
    """Train the four bench models on digits32_color and record their accuracy and activation sparsity."""
    import torch

    x32_tr, y32_tr, x32_val, y32_val = c32["x_all"], c32["y_all"], c32["x_val_all"], c32["y_val_all"]
    for i, name in enumerate(n for n in BENCH_DESC if n != MNV3_NAME):
        tb = time.time()
        torch.manual_seed(SEED + 10 + i)
        model = ctors[name]()
        train(model, x32_tr, y32_tr, BENCH_PRETRAIN, seed=SEED + 10 + i,
              log_prefix=f"  {name}", x_val=c32["x_val"], y_val=c32["y_val"])
        path, ops, diff = export_and_check(model, name, [None, 3, 32, 32], c32["x_val"][:32])
        acc = ort_acc(path, c32["x_val"], c32["y_val"])
        acc_full = torch_acc(model, x32_val, y32_val)
        sp = activation_sparsity(model, c32["x_val"][:32])
        mean_sp = float(np.mean([s for _, s in sp]))
        log(f"  {name}: digits32_color val acc {acc:.4f} (all {len(x32_val)} generated val: "
            f"{acc_full:.4f}); activation zeros per layer "
            f"{[round(s, 3) for _, s in sp]}, mean {mean_sp:.3f}; {time.time() - tb:.0f}s")
        assert acc > 0.90, f"{name}: val acc {acc} <= 0.90"
        catalog["models"].append(catalog_entry(
            name, path, BENCH_DESC[name], model, ops, diff, [None, 3, 32, 32], "digits32_color",
            dict(BENCH_PRETRAIN, seed=SEED + 10 + i, loss="cross_entropy",
                 data=f"digits32_color generator, {len(x32_tr)} training images"),
            accuracy={"digits32_color_val": round(acc, 4)},
            activation_sparsity={"measured_on": "first 32 digits32_color val images, eval mode (torch)",
                                 "per_layer": {k: round(v, 4) for k, v in sp}, "mean": round(mean_sp, 4)}))


def write_catalog(catalog, t0):
    """Write catalog.json and check the generated files' sizes."""
    catalog["default_model"] = "digits_cnn"
    catalog["default_data"] = "digits_shifted"
    (OUT_DIR / "catalog.json").write_text(json.dumps(catalog, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir()
                if p.suffix in (".onnx", ".npz", ".json"))
    log(f"wrote catalog.json; generated files total {total / 1e6:.2f} MB; {time.time() - t0:.0f}s")
    big = [p.name for p in OUT_DIR.iterdir() if p.suffix in (".onnx", ".npz")
           and p.stat().st_size > 2.5e6 and p.name != "digits32_color.npz"]
    assert not big, f"generated files too large: {big}"
    assert total < 8.5e6, f"generated files total {total / 1e6:.2f} MB"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--only":
        sys.exit(main_only(sys.argv[2]))
    sys.exit(main())
