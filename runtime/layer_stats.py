"""Per-layer sparsity and MAC counts measured on a real batch with the dense reference.

This is the analytic definition of the constraint MAC counts (docs/ARCHITECTURE.md,
"Position constraints"; the rules come from runtime/constraints.py): the native kernels'
`required` counters and the accelerator model must equal it.
  FP  products a_in(c) * W  with a_in(c) != 0
  BP  products d(k) * W     with d in G_l and the input position in G_{l-1}
  WG  products d(k) * a(c)  with d in G_l and a_in(c) != 0
"""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

from .constraints import ACTIVATION_OPS, rule_for, rule_of_node
from .ir import Model


def g_mask(op, z, attrs) -> np.ndarray:
    """Where an error can pass through the activation `op` (the set G), from the constraint table."""
    return rule_for(op, attrs).g_mask(z, attrs)


def layer_table(model: Model, vals: Dict[str, np.ndarray], dvals: Dict[str, np.ndarray],
                trainable) -> List[dict]:
    """One row per Conv/Gemm layer: activation, sparsities and dense/required MACs per phase."""
    want = set(trainable)
    needs = model.needs_grad(want)
    rows = []
    for node in model.weight_layers():
        act = model.activation_after(node)
        m = layer_masks(model, node, vals, dvals)
        a, d, a_in, g_in, g_out = m["a"], m["d"], m["a_in"], m["g_in"], m["g_out"]
        dense, req = _macs(node, a_in, g_in, g_out, model.params[node.params["W"]].shape)
        if not needs[node.inputs[0]]:
            dense["bp"] = req["bp"] = 0
        if node.params["W"] not in want:
            dense["wg"] = req["wg"] = 0
        rows.append({"name": node.name, "op": node.op, "activation": act.onnx_op if act else "none",
                     "rule": rule_of_node(act).text, "constrained": rule_of_node(act).constrained,
                     "act_sparsity": float((a == 0).mean()), "act_elems": int(a.size), "input_sparsity": float(1 - a_in.mean()),
                     "grad_sparsity": float((d == 0).mean()),
                     "macs_dense": dense, "macs_required": req,
                     "act_bytes": act_bytes(act, m["z"], a)})
    return rows


def act_bytes(act, z, a) -> dict:
    """fp32 bytes of a layer's output activation, dense, and in the stored form its rule keeps
    for backward (runtime/constraints.py)."""
    size = int(a.size)
    stored = rule_of_node(act).stored_bytes(size, int(np.count_nonzero(a)))
    return {"dense": 4 * size, "stored": math.ceil(stored)}


def layer_masks(model, node, vals, dvals) -> dict:
    """The operand masks of one Conv/Gemm layer on a recorded step: input x and its non-zeros
    a_in, the G of the input (from the producing activation, through reshapes) and of the
    output, the output activation a, the error d = dL/dz, and the producer of x (prev)."""
    act = model.activation_after(node)
    z, x = vals[node.output], vals[node.inputs[0]]
    prev = model.producer(node.inputs[0])
    if prev is not None and prev.op in ACTIVATION_OPS:
        g_in = g_mask(prev.op, vals[prev.inputs[0]], prev.attrs).reshape(x.shape)
    else:
        g_in = np.ones(x.shape, bool)
    return {"act": act, "prev": prev, "z": z, "x": x, "a": vals[act.output] if act else z,
            "d": dvals.get(node.output, np.zeros_like(z)), "a_in": x != 0, "g_in": g_in,
            "g_out": g_mask(act.op if act else None, z, act.attrs if act else {})}


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
        oh_ok, ih = valid_taps(oh, h, sh, dh, pt, r)
        for s in range(S):
            ow_ok, iw = valid_taps(ow, w, sw, dw, pl, s)
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


def valid_taps(o, size, stride, dil, pad, r):
    """Output indices whose tap r lands inside the input, and the input indices they read."""
    out = np.arange(o)
    pos = out * stride - pad + r * dil
    ok = (pos >= 0) & (pos < size)
    return out[ok], pos[ok]
