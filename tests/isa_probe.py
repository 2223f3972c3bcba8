"""Runs a fixed set of layers through the kernel level this process selected (EDGETUNE_ISA)
and saves every output: tests/test_isa_levels.py runs it once per level and compares.

    python tests/isa_probe.py OUT.npz
"""
from __future__ import annotations

import sys

import numpy as np

from edgetune import _native
from kernel_goldens import GEOMETRIES

ACTS = ("none", "relu", "relu6", "hardswish", "leaky_relu", "sigmoid")
# the golden geometries, plus a wider conv whose channels fill several AVX-512 vectors and
# leave a tail (K = 40)
LAYERS = dict(GEOMETRIES, wide3x3=("conv", 2, 9, 9, 24, 40, 3, 3, 1, 1, 1, 0))
THREADS = 2  # the same at every level: the pixel partition (so the WG sum order) follows it


def run_layer(geo: str, act: str, dense: bool, rng) -> dict:
    """FP, BP and WG of one layer, plus the standalone activation and its gradient."""
    kind, N, H, W, C, K, R, S, st, pad, groups, _ = LAYERS[geo]
    in_act = act if act in ("relu", "relu6", "hardswish") else "relu"  # a sparse input either way
    shape = (N, C) if kind == "gemm" else (N, H, W, C)
    z_in = (rng.standard_normal(shape) * 2).astype(np.float32)
    w = (rng.standard_normal((K, C // groups, R, S)) / np.sqrt(C // groups * R * S) * 2).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    if kind == "gemm":
        layer = _native.GemmLayer(C, K, act=act)
        layer.set_weights(w.reshape(K, C), b)
    else:
        layer = _native.ConvLayer(C, K, [R, S], [st, st], [pad] * 4, [1, 1], groups, act=act)
        layer.set_weights(w, b)
    _, x = _native.activate(z_in, in_act, dense=dense)
    a, _ = layer.forward(x, dense=dense)
    grad_a = rng.standard_normal(a.shape).astype(np.float32)
    g_in, dw, db = layer.backward(grad_a)
    act_a, info = _native.activate(z_in * 2, act, dense=dense)
    return {"fp_a": a, "bp_g_in": g_in, "wg_dw": dw, "wg_db": db,
            "act_a": act_a, "act_grad_z": info.grad_z(z_in)}


def run_all() -> dict:
    """Every layer x activation x mode; keys are geo/act/mode/output."""
    _native.set_num_threads(THREADS)
    out = {}
    for i, geo in enumerate(LAYERS):
        for j, act in enumerate(ACTS):
            for dense in (False, True):
                rng = np.random.default_rng(100 * i + j)  # the same inputs in both modes
                mode = "dense" if dense else "sparse"
                for k, v in run_layer(geo, act, dense, rng).items():
                    out[f"{geo}/{act}/{mode}/{k}"] = np.asarray(v)
    return out


if __name__ == "__main__":
    res = run_all()
    res["_level"] = np.array(_native.LEVEL)
    np.savez(sys.argv[1], **res)
