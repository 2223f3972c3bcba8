"""`edgetune info`: a readable description of a model as edgetune sees it."""
from __future__ import annotations

import numpy as np

from .constraints import ACTIVATION_OPS, rule_of_node
from .ops import get as get_op


def describe(model_ref: str, untie: bool = False) -> str:
    """Layers, output shapes, parameters and the constraint rule each activation gives (for the
    other ops: how zeros and G pass through them, from their op file in runtime/ops)."""
    from .engines.dense import DenseEngine
    from .onnx_import import load_model

    from .onnx_export import read_metadata
    from .preflight import check_export, engine_support

    model = load_model(model_ref, untie=untie)
    shape = tuple(1 if d is None else d for d in model.input_shape)
    probe = DenseEngine()
    probe.load(model, [])
    with np.errstate(all="ignore"):      # the values give the shapes; check_export judges the numbers
        vals = probe.forward_values(np.zeros(shape, np.float32))
    meta = read_metadata(model)
    lines = [f"model: {model.source}",
             f"input: {model.input_name} {_fmt(model.input_shape)}   output: {model.output_name}"
             + (f" (then {model.final})" if model.final else ""),
             f"parameters: {model.num_params():,} in {len(model.params)} tensors; "
             f"trainable by default: {len(model.trainable_names())} tensors"]
    if meta["classes"]:
        lines.append(f"classes: {', '.join(meta['classes'])}")
    if meta["normalize"]:
        lines.append(f"input normalization: mean {meta['normalize']['mean']} std {meta['normalize']['std']}")
    lines += [f"import: {note}" for note in model.notes]
    lines += _support_lines(model, engine_support(model), check_export)
    lines += ["", f"{'layer':<28} {'op':<14} {'output':<16} {'params':>9}  activation -> constraint"]
    for node in model.nodes:
        if node.op in ACTIVATION_OPS:
            continue
        n_params = sum(model.params[v].size for v in node.params.values())
        out = tuple(vals[node.output].shape[1:])
        rule = get_op(node.op).node_rule(model, node)
        if node.op in ("conv", "gemm"):
            act = model.activation_after(node)
            rule = rule_of_node(act).text
            if node.op == "conv" and node.attrs["group"] > 1:
                rule = f"[groups={node.attrs['group']}] " + rule
        lines.append(f"{node.name[:28]:<28} {node.onnx_op:<14} {str(out):<16} {n_params:>9}  {rule}")
    return "\n".join(lines)


def _support_lines(model, engines, check_export):
    """The same checks finetune runs before training, so `info` says what `finetune` will do."""
    from .errors import EdgetuneError

    ok = [name for name, good, _ in engines if good]
    try:
        check_export(model)
        export = "the export runs in onnxruntime with any batch size"
    except EdgetuneError as exc:
        return [f"supported: no ({exc})"]
    if not ok:
        return ["supported: no (" + "; ".join(f"{n}: {d}" for n, _, d in engines) + ")"]
    if len(ok) == len(engines):
        return [f"supported: yes (engines {', '.join(ok)} run a training step; {export})"]
    bad = "; ".join(f"{n} engine: {d}" for n, good, d in engines if not good)
    return [f"supported: with --engine {' or '.join(ok)} only ({bad}); {export}"]


def _fmt(shape):
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
