"""Issue 23's repro: torchvision resnet18 and mnasnet0_5 in eval mode, exported by both torch
exporters, gradients of every shared initializer from the native and dense engines (float32)
against a central finite difference of the loss computed in float64 (the dense engine's forward
pass at double precision; float32 rounding would swamp a difference of the loss).

    python tools/repro/shared_params.py            # needs the test extra (torch, torchvision)

`fresh`: BatchNorm statistics as built (folded biases of one width are all zero: the
TorchScript exporter stores them once; the dynamo exporter drops zero biases). `bn-shift`: every
BatchNorm's beta set to 0.1, so folded biases are equal and non-zero and both exporters tie them.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
from tv_zoo import models  # noqa: E402  (torchvision's definitions without its compiled ops)

from edgetune.runtime import compute_gradients, load_model  # noqa: E402
from edgetune.runtime.engines.dense import DenseEngine  # noqa: E402
from edgetune.runtime.ties import trained_ties  # noqa: E402


def build(name: str, variant: str):
    torch.manual_seed(0)
    net = {"resnet18": lambda: models().resnet18(num_classes=10),
           "mnasnet0_5": lambda: models().mnasnet0_5(num_classes=10)}[name]().eval()
    if variant == "bn-shift":
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.constant_(m.bias, 0.1)
    return net


def export(net, exporter: str, path: str):
    x = torch.zeros(1, 3, 48, 48)
    kw = {"dynamo": exporter == "dynamo", "input_names": ["x"], "output_names": ["y"]}
    if exporter == "dynamo":
        torch.onnx.export(net, (x,), path, dynamic_shapes={"x": {0: torch.export.Dim("N")}}, **kw)
    else:
        torch.onnx.export(net, (x,), path, dynamic_axes={"x": {0: "N"}}, **kw)


def loss64(eng, params, x, y):
    """Mean cross-entropy of the float64 forward pass with `params`."""
    eng.params = params
    z = eng.predict(x).astype(np.float64)
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def on_kink(eng, model, x):
    """(pre-activations exactly 0, all pre-activations) of the float64 forward pass."""
    vals = eng._forward(np.asarray(x, np.float64), keep=False)[0]
    pre = [vals[n.inputs[0]] for n in model.nodes if n.op in ("relu", "clip")]
    return sum(int((v == 0).sum()) for v in pre), sum(v.size for v in pre)


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 48, 48)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    print(f"{'model':<22}{'exporter':<9}{'shared':>7}  {'tensor (readers)':<28}{'fd':>12}{'dense':>12}"
          f"{'native':>12}  native, dense - float64 (of max)")
    for name in ("resnet18", "mnasnet0_5"):
        for variant in ("fresh", "bn-shift"):
            for exporter in ("script", "dynamo"):
                with tempfile.TemporaryDirectory() as d:
                    path = os.path.join(d, "m.onnx")
                    export(build(name, variant), exporter, path)
                    model = load_model(path)
                    ties = trained_ties(model)
                    _, gd = compute_gradients(model, x, y, engine="dense")
                    _, gn = compute_gradients(model, x, y, engine="native")
                    ref = DenseEngine(dtype=np.float64)
                    ref.load(model, model.trainable_names())
                    base = dict(ref.params)
                    _, g64 = ref.loss_and_grads(x, y)
                    label = f"{name}[{variant}]"
                    kinks = on_kink(ref, model, x)
                    if not ties:
                        print(f"{label:<22}{exporter:<9}{0:>7}  (no initializer is shared)")
                    print(f"{label:<22}{exporter:<9}  pre-activations exactly 0 (on ReLU's kink: a two-sided "
                          f"difference there is not the derivative): {kinks[0]} of {kinks[1]}")
                    for k, readers in sorted(ties.items()):
                        i = int(np.argmax(np.abs(gd[k])))
                        eps = 1e-4
                        up, dn = base[k].copy().ravel(), base[k].copy().ravel()
                        up[i] += eps
                        dn[i] -= eps
                        fd = (loss64(ref, {**base, k: up.reshape(base[k].shape)}, x, y)
                              - loss64(ref, {**base, k: dn.reshape(base[k].shape)}, x, y)) / (2 * eps)
                        top = np.abs(g64[k]).max()
                        rel = [float(np.abs(g[k] - g64[k]).max() / top) for g in (gn, gd)]
                        print(f"{label:<22}{exporter:<9}{len(ties):>7}  {k[:22] + f' ({len(readers)})':<28}"
                              f"{fd:>12.5e}{gd[k].ravel()[i]:>12.5e}{gn[k].ravel()[i]:>12.5e}"
                              f"  {rel[0]:.1e} {rel[1]:.1e}")


if __name__ == "__main__":
    main()
