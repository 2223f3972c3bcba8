"""`--num-classes K`: replace the model's last Gemm/MatMul with a fresh K-output layer.

The new layer keeps the old one's input width, initializer names and layout (Gemm
transB or MatMul), and is initialised like torch's nn.Linear: weight and bias drawn
from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), here from numpy's generator seeded with
--seed. The ONNX graph's output shape follows, so the export has K outputs.
"""
from __future__ import annotations

import numpy as np

from .errors import ModelError, UsageError


def head_layer(model):
    """The last Gemm/MatMul, which must produce the model's output (before a final softmax)."""
    layers = model.weight_layers()
    last = layers[-1] if layers else None
    if last is None or last.op != "gemm":
        what = f"a {last.onnx_op} ({last.name!r})" if last is not None else "no Conv/Gemm layer"
        raise ModelError(f"{model.source}: --num-classes replaces the last Gemm/MatMul layer, but the model "
                         f"ends with {what}")
    if last.output != model.output_name:
        after = [n.onnx_op for n in model.nodes[model.nodes.index(last) + 1:]]
        raise ModelError(f"{model.source}: --num-classes: the last Gemm/MatMul ({last.name!r}) is followed by "
                         f"{', '.join(after)}; it must produce the model's output")
    return last


def num_outputs(model) -> int:
    """Width of the head layer's output."""
    node = head_layer(model)
    w = model.params[node.params["W"]]
    return int(w.shape[0] if node.attrs["transB"] else w.shape[1])


def replace_head(model, k: int, seed: int) -> str:
    """Give `model` a fresh k-output last layer (in place); returns a one-line description."""
    if k < 2:
        raise UsageError(f"--num-classes must be at least 2, got {k}")
    node = head_layer(model)
    w_name, b_name = node.params["W"], node.params.get("B")
    shared = [n.name for n in model.nodes if n is not node and {w_name, b_name} & set(n.params.values())]
    if shared:
        raise ModelError(f"{model.source}: --num-classes: the last layer shares its parameters with {shared[0]!r}")
    w = model.params[w_name]
    trans = node.attrs["transB"]
    fan_in = int(w.shape[1] if trans else w.shape[0])
    old = int(w.shape[0] if trans else w.shape[1])
    bound = 1.0 / np.sqrt(fan_in)
    rng = np.random.default_rng(seed)
    new_w = rng.uniform(-bound, bound, (k, fan_in) if trans else (fan_in, k)) / node.attrs["alpha"]
    model.params[w_name] = new_w.astype(np.float32)
    if b_name is not None:
        model.params[b_name] = (rng.uniform(-bound, bound, k) / node.attrs["beta"]).astype(np.float32)
    _set_output_width(model, k)
    return (f"replaced the last layer {node.name!r} ({fan_in} -> {old}) with a fresh {fan_in} -> {k} layer "
            f"(torch Linear init, seed {seed})")


def _set_output_width(model, k: int) -> None:
    """The ONNX graph's output now has k columns (the export carries the new initializers)."""
    proto = model.onnx_model
    for o in proto.graph.output:
        dims = o.type.tensor_type.shape.dim
        if len(dims) == 2:
            dims[1].Clear()
            dims[1].dim_value = k
