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
