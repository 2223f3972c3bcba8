"""Shared test utilities: small ONNX files built by hand, and the CLI runner."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from click.testing import CliRunner

from edgetune.runtime.cli import cli


def run_cli(*args):
    """Invoke the CLI in-process; returns click's Result."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def tiny_mlp(path, in_features=64, hidden=16, classes=10, op="Relu", seed=0, elem=TensorProto.FLOAT):
    """Flatten -> Gemm -> <op> -> Gemm, (N,1,8,8) input; `op` may be an unsupported one."""
    rng = np.random.default_rng(seed)
    np_type = {TensorProto.FLOAT: np.float32, TensorProto.INT8: np.int8}[elem]
    w1 = (rng.standard_normal((hidden, in_features)) * 0.2).astype(np_type)
    w2 = (rng.standard_normal((classes, hidden)) * 0.2).astype(np_type)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(hidden, np_type), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(classes, np_type), "b2")]
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node(op, ["h"], ["a"], name="act1"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", elem, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", elem, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def digits_like(path, n=64, classes=10, shape=(1, 8, 8), seed=0, **overrides):
    """An .npz in edgetune's data format; `overrides` replace arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.random((n,) + shape).astype(np.float32), "y": rng.integers(0, classes, n),
              "x_val": rng.random((n // 2,) + shape).astype(np.float32), "y_val": rng.integers(0, classes, n // 2)}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path
