"""What cheaper multipliers would cost in accuracy: digits_mlp fine-tuned with the device model
(hardware/device_model.py) as the fp32 device computes, and with every array multiply taking its
operands rounded to bfloat16 (8-bit significands: the product is exact in fp32, accumulation,
the loss and the update stay fp32, so the weights are still kept in fp32):

    python -m edgetune.hardware.precision [--epochs 4] [--lr 0.02]

prints the validation accuracy and loss per epoch of both and the largest weight difference.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from . import device_model as D
from .pe_model import fmul

F32 = np.float32


def bf16_mul(a, b):
    """The product of a and b rounded to bf16 first (round to nearest even)."""
    from ..firmware_bridge.codecs import round_bf16

    return fmul(round_bf16(np.asarray(a, F32)), round_bf16(np.asarray(b, F32)))


def run(mul, epochs: int, lr: float, seed: int = 0):
    from ..firmware_bridge.codecs import encode_model_descriptor
    from ..runtime import load_model
    from ..models import load_dataset
    from ..runtime.optim import OptimizerConfig

    m = load_model("digits_mlp")
    cfg = OptimizerConfig(name="sgd", lr=lr, momentum=0.9)
    dm = D.DeviceModel.from_descriptor(json.loads(encode_model_descriptor(m, m.trainable_names(), cfg,
                                                                          "cross_entropy")))
    dm.load_state(m.params, {"t": 0, "buf": {}}, 0)
    d = load_dataset("digits_shifted")
    x, y, xv, yv = d["x"].astype(F32), d["y"], d["x_val"].astype(F32), d["y_val"]
    rng = np.random.default_rng(seed)
    saved, D.ARRAY_MUL = D.ARRAY_MUL, mul
    hist = []
    try:
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for i in range(0, len(x), 32):
                idx = order[i:i + 32]
                dm.train_step(x[idx], y[idx])
            z = dm.predict(xv)
            hist.append((float((z.argmax(1) == yv).mean()), float(D.softmax_xent(z, yv)[0])))
    finally:
        D.ARRAY_MUL = saved
    return hist, dm.params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgetune.hardware.precision", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.02)
    a = ap.parse_args(argv)
    h32, p32 = run(fmul, a.epochs, a.lr)
    h16, p16 = run(bf16_mul, a.epochs, a.lr)
    print("epoch | fp32 lanes: val acc, val loss | bf16-operand lanes: val acc, val loss")
    for e, (r32, r16) in enumerate(zip(h32, h16), 1):
        print(f"{e} | {100 * r32[0]:.1f}%, {r32[1]:.4f} | {100 * r16[0]:.1f}%, {r16[1]:.4f}")
    rel = max(float(np.abs(p32[k] - p16[k]).max() / np.abs(p32[k]).max()) for k in p32)
    print(f"largest weight difference (relative to each tensor's max): {rel:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
