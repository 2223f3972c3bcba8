"""`edgetune info`: a readable description of a model as edgetune sees it."""
from __future__ import annotations

import numpy as np

from .layer_stats import RULES


def describe(model_ref: str) -> str:
    """Layers, output shapes, parameters and the constraint rule each activation gives."""
    from .engines.dense import DenseEngine
    from .onnx_import import load_model

    model = load_model(model_ref)
    shape = tuple(1 if d is None else d for d in model.input_shape)
    probe = DenseEngine()
    probe.load(model, [])
    vals = probe.forward_values(np.zeros(shape, np.float32))
    lines = [f"model: {model.source}",
             f"input: {model.input_name} {_fmt(model.input_shape)}   output: {model.output_name}"
             + (f" (then {model.final})" if model.final else ""),
             f"parameters: {model.num_params():,} in {len(model.params)} tensors; "
             f"trainable by default: {len(model.trainable_names())} tensors",
             "supported: yes (every op imports)", "",
             f"{'layer':<28} {'op':<14} {'output':<16} {'params':>9}  activation -> constraint"]
    for node in model.nodes:
        if node.op in ("relu", "clip", "hardswish", "hardsigmoid", "leakyrelu", "sigmoid"):
            continue
        n_params = sum(model.params[v].size for v in node.params.values())
        out = tuple(vals[node.output].shape[1:])
        rule = ""
        if node.op in ("conv", "gemm"):
            act = model.activation_after(node)
            rule = RULES.get(act.op if act else None, RULES[None])
            if node.op == "conv" and node.attrs["group"] > 1:
                rule = f"[groups={node.attrs['group']}] " + rule
        lines.append(f"{node.name[:28]:<28} {node.onnx_op:<14} {str(out):<16} {n_params:>9}  {rule}")
    return "\n".join(lines)


def _fmt(shape):
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
