"""Small hand-built ONNX models for tests that need a particular structure (a branch, a
controllable sparsity), each with a (N, 1, 8, 8) input `input` and 10 logits."""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from helpers import save_graph


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def residual_cnn(path, seed=0, ch=8):
    """conv-relu, then a second conv-relu whose output is added to the first (a fork and a join),
    relu, 2x2 max-pool, flatten, gemm: the branching model of the device and resume tests."""
    rng = np.random.default_rng(seed)
    inits = [_init("c1.w", rng.standard_normal((ch, 1, 3, 3)) * 0.4), _init("c1.b", np.full(ch, 0.05)),
             _init("c2.w", rng.standard_normal((ch, ch, 3, 3)) * 0.15), _init("c2.b", np.zeros(ch)),
             _init("fc.w", rng.standard_normal((10, ch * 16)) * 0.1), _init("fc.b", np.zeros(10))]
    nodes = [helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["a1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["a2"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a2"], ["r2"], name="r2"),
             helper.make_node("Add", ["r1", "r2"], ["s"], name="join"),
             helper.make_node("Relu", ["s"], ["r3"], name="r3"),
             helper.make_node("MaxPool", ["r3"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    return save_graph(path, nodes, inits, ["N", 1, 8, 8], ["N", 10], "residual")


def plan_mlp(path, seed=0, hidden=48):
    """Flatten, Gemm-ReLU, Gemm-ReLU, Gemm. The first ReLU's biases (0.8) keep it nearly all
    positive on small inputs (< 20% zeros: the native engine plans it densely) and about half
    zero on large ones (listed): `plan_batch` moves its sparsity across the threshold at will."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", rng.standard_normal((hidden, 64)) * 0.3), _init("b1", np.full(hidden, 0.8)),
             _init("w2", rng.standard_normal((hidden, hidden)) * 0.2), _init("b2", np.full(hidden, 0.3)),
             _init("w3", rng.standard_normal((10, hidden)) * 0.2), _init("b3", np.zeros(10))]
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h1"], name="fc1", transB=1),
             helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
             helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], name="fc2", transB=1),
             helper.make_node("Relu", ["h2"], ["a2"], name="r2"),
             helper.make_node("Gemm", ["a2", "w3", "b3"], ["logits"], name="fc3", transB=1)]
    return save_graph(path, nodes, inits, ["N", 1, 8, 8], ["N", 10], "plan_mlp")


def plan_batch(rng, kinds, n=16):
    """A batch for plan_mlp; kinds is a string of 'd' (small input: a dense first ReLU) and 's'
    (large input: a sparse one), one letter per sample, cycled over n samples."""
    scale = np.array([0.05 if kinds[i % len(kinds)] == "d" else 1.5 for i in range(n)], np.float32)
    x = (rng.standard_normal((n, 1, 8, 8)) * scale[:, None, None, None]).astype(np.float32)
    return x, rng.integers(0, 10, n)


def plan_cnn(path, seed=0, ch=8):
    """Conv-ReLU (biases 0.8: dense on small inputs, about half zero on large ones, as plan_mlp),
    Conv-ReLU, 2x2 max-pool, Flatten, Gemm: the same plan switches through the conv kernels."""
    rng = np.random.default_rng(seed)
    inits = [_init("c1.w", rng.standard_normal((ch, 1, 3, 3)) * 0.5), _init("c1.b", np.full(ch, 0.8)),
             _init("c2.w", rng.standard_normal((ch, ch, 3, 3)) * 0.15), _init("c2.b", np.full(ch, 0.2)),
             _init("fc.w", rng.standard_normal((10, ch * 16)) * 0.1), _init("fc.b", np.zeros(10))]
    nodes = [helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["h1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
             helper.make_node("Conv", ["a1", "c2.w", "c2.b"], ["h2"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h2"], ["a2"], name="r2"),
             helper.make_node("MaxPool", ["a2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    return save_graph(path, nodes, inits, ["N", 1, 8, 8], ["N", 10], "plan_cnn")
