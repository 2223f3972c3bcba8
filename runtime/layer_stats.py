"""Per-layer sparsity and MAC counts measured on a real batch with the dense reference.

This is the analytic definition of the constraint MAC counts (DESIGN §1): the native
kernels' `required` counters and the accelerator model must equal it.
  FP  products a_in(c) * W  with a_in(c) != 0
  BP  products d(k) * W     with d in G_l and the input position in G_{l-1}
  WG  products d(k) * a(c)  with d in G_l and a_in(c) != 0
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .engines import dense_ops as ops
from .ir import Model

RULES = {
    "relu": "ReLU: G = A; keep 1-bit mask + packed non-zeros",
    "clip": "ReLU6/Clip: G = A minus saturated; keep 2-bit state + packed a",
    "hardswish": "hard-swish: G = {z >= -3}; keep 2-bit region + z where curved",
    "hardsigmoid": "hard-sigmoid: G = linear region; A dense; keep 2-bit region",
    "leakyrelu": "LeakyReLU: no constraint (dense)",
    "sigmoid": "Sigmoid: no constraint (dense)",
    None: "no activation: no constraint (dense)",
}
CONSTRAINED = ("relu", "clip", "hardswish")


def g_mask(op, z, attrs) -> np.ndarray:
    """Where an error can pass through the activation (the set G), from the rule."""
    if op is None or op in ("leakyrelu", "sigmoid"):
        return np.ones(z.shape, bool)
    if op == "hardswish":
        return z >= -3
    return ops.act_derivative(op, z, None, attrs) != 0


def layer_table(model: Model, vals: Dict[str, np.ndarray], dvals: Dict[str, np.ndarray],
                trainable) -> List[dict]:
    """One row per Conv/Gemm layer: activation, sparsities and dense/required MACs per phase."""
    producers = {n.output: n for n in model.nodes}
    want = set(trainable)
    needs = _needs_input_grad(model, want)
    rows = []
    for node in model.weight_layers():
        act = model.activation_after(node)
        m = layer_masks(model, node, vals, dvals, producers)
        a, d, a_in, g_in, g_out = m["a"], m["d"], m["a_in"], m["g_in"], m["g_out"]
        dense, req = _macs(node, a_in, g_in, g_out, model.params[node.params["W"]].shape)
        if not needs[node.name]:
            dense["bp"] = req["bp"] = 0
        if node.params["W"] not in want:
            dense["wg"] = req["wg"] = 0
        rows.append({"name": node.name, "op": node.op, "activation": act.onnx_op if act else "none",
                     "rule": RULES.get(act.op if act else None, RULES[None]),
                     "act_sparsity": float((a == 0).mean()), "act_elems": int(a.size), "input_sparsity": float(1 - a_in.mean()),
                     "grad_sparsity": float((d == 0).mean()),
                     "macs_dense": dense, "macs_required": req,
                     "act_bytes": act_bytes(act, m["z"], a)})
    return rows


def act_bytes(act, z, a) -> dict:
    """fp32 bytes of a layer's output activation, dense, and as the rule stores it for backward
    (DESIGN: ReLU 1-bit mask + packed non-zeros; ReLU6 2-bit state + packed a; hard-swish 2-bit
    region + z where curved; other activations dense)."""
    size = int(a.size)
    dense = 4 * size
    op = act.op if act is not None else None
    if op == "relu":
        stored = -(-size // 8) + 4 * int(np.count_nonzero(a))
    elif op == "clip" and act.attrs.get("min") == 0.0:
        stored = -(-size // 4) + 4 * int(np.count_nonzero(a))
    elif op == "hardswish":
        stored = -(-size // 4) + 4 * int(np.count_nonzero((z > -3) & (z < 3)))
    else:
        stored = dense
    return {"dense": dense, "stored": int(stored)}


def layer_masks(model, node, vals, dvals, producers) -> dict:
    """The operand masks of one Conv/Gemm layer on a recorded step: input x and its non-zeros
    a_in, the G of the input (from the producing activation, through reshapes) and of the
    output, the output activation a, the error d = dL/dz, and the producer of x (prev)."""
    act = model.activation_after(node)
    z, x = vals[node.output], vals[node.inputs[0]]
    prev = producers.get(node.inputs[0])
    while prev is not None and prev.op in ("flatten", "reshape"):   # masks survive reshaping
        prev = producers.get(prev.inputs[0])
    if prev is not None and prev.op in ("relu", "clip", "hardswish", "hardsigmoid", "leakyrelu", "sigmoid"):
        g_in = g_mask(prev.op, vals[prev.inputs[0]], prev.attrs).reshape(x.shape)
    else:
        g_in = np.ones(x.shape, bool)
    return {"act": act, "prev": prev, "z": z, "x": x, "a": vals[act.output] if act else z,
            "d": dvals.get(node.output, np.zeros_like(z)), "a_in": x != 0, "g_in": g_in,
            "g_out": g_mask(act.op if act else None, z, act.attrs if act else {})}


def _needs_input_grad(model, want):
    """node name -> whether its input gradient is needed (something trainable lies upstream)."""
    upstream, out = {model.input_name: False}, {}
    for n in model.nodes:
        out[n.name] = any(upstream.get(i, False) for i in n.inputs)
        upstream[n.output] = out[n.name] or any(v in want for v in n.params.values())
    return out


def _macs(node, a_in, g_in, g_out, wshape):
    if node.op == "gemm":
        fin, fout = a_in.shape[1], g_out.shape[1]
        n = a_in.shape[0]
        dense = n * fin * fout
        na, ng, ngi = a_in.sum(1), g_out.sum(1), g_in.sum(1)
        req = {"fp": int(na.sum()) * fout, "bp": int((ng * ngi).sum()), "wg": int((ng * na).sum())}
        return {"fp": dense, "bp": dense, "wg": dense}, req
    k, cg, R, S = wshape
    g = node.attrs["group"]
    n, c, h, w = a_in.shape
    _, _, oh, ow = g_out.shape
    (sh, sw), (dh, dw), (pt, pl, _, _) = node.attrs["stride"], node.attrs["dilation"], node.attrs["pads"]
    kg = k // g
    A = a_in.reshape(n, g, cg, h, w).sum(2)        # non-zeros per group and pixel
    Gi = g_in.reshape(n, g, cg, h, w).sum(2)
    Go = g_out.reshape(n, g, kg, oh, ow).sum(2)
    dense = {"fp": 0, "bp": 0, "wg": 0}
    req = {"fp": 0, "bp": 0, "wg": 0}
    for r in range(R):
        oh_ok, ih = _valid(oh, h, sh, dh, pt, r)
        for s in range(S):
            ow_ok, iw = _valid(ow, w, sw, dw, pl, s)
            taps = len(oh_ok) * len(ow_ok) * n
            for key in dense:
                dense[key] += taps * g * kg * cg
            a = A[:, :, ih][:, :, :, iw]
            gi = Gi[:, :, ih][:, :, :, iw]
            go = Go[:, :, oh_ok][:, :, :, ow_ok]
            req["fp"] += int(a.sum()) * kg
            req["bp"] += int((go * gi).sum())
            req["wg"] += int((go * a).sum())
    return dense, req


def _valid(o, size, stride, dil, pad, r):
    """Output indices whose tap r lands inside the input, and the input indices they read."""
    out = np.arange(o)
    pos = out * stride - pad + r * dil
    ok = (pos >= 0) & (pos < size)
    return out[ok], pos[ok]
