"""Performance model of the sparse-training accelerator (PE array, buffers, estimator).

The arithmetic is done by a hosted engine; this module only *counts*. For every
Conv/Gemm layer and each phase it counts, from the real operand masks of the
step:

* MACs: ``dense`` (every multiply), ``executed`` (the ones the constraint-based
  dataflow performs) and ``skipped`` = dense - executed. With ``C_A`` the number
  of non-zero inputs in each output's receptive field (a convolution of the
  input mask with a kernel of ones), ``D`` the error mask (``f'(z) != 0`` of the
  activation after the layer, all ones when there is none) and ``C_G`` the same
  count for the previous layer's error mask: FP = sum C_A, BP = sum D*C_G,
  WG = sum D*C_A. Padding taps count as dense work.
* on-chip buffer reads/writes in bytes (weights, compressed activations as
  non-zeros + 1-bit mask, errors, weight gradients);
* modelled cycles: ``ceil(executed / PEs) + rows + cols`` (array fill) per
  layer and phase; the non-zero position estimator handles ``lanes`` output
  elements per cycle *in parallel with FP*; its cycles are hidden when they do
  not exceed the layer's FP cycles, otherwise the excess is exposed.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from ..runtime.engines import dense_ops as ops
from ..runtime.ir import ACTIVATION_OPS

PE_ROWS, PE_COLS = 16, 16
CLOCK_MHZ = 200
ESTIMATOR_LANES = 16
BUFFERS = {"weight_bytes": 256 * 1024, "activation_bytes": 512 * 1024, "error_bytes": 256 * 1024,
           "staging_bytes": 64 * 1024 * 1024}

PHASES = ("fp", "bp", "wg")


def capabilities() -> dict:
    return {"pe_array": [PE_ROWS, PE_COLS], "clock_mhz": CLOCK_MHZ, "estimator_lanes": ESTIMATOR_LANES,
            "buffers": dict(BUFFERS)}


def _zero_phase():
    return {"dense_macs": 0, "executed_macs": 0, "skipped_macs": 0, "buffer_read_bytes": 0,
            "buffer_write_bytes": 0, "cycles": 0}


class AccelModel:
    """Counts work per layer and phase for the steps a device executes."""

    def __init__(self, model, trainable, elem_bytes: int = 4):
        from ..runtime.engines.dense import DenseEngine

        self.model, self.elem = model, elem_bytes
        self.dense = DenseEngine()
        self.dense.load(model, trainable)
        self.needed = self.dense._needs_grad()
        self.want = set(trainable)
        self.producer = {n.output: n for n in model.nodes}
        self.layers: Dict[str, dict] = {}
        self.totals = {"steps": 0, "cycles": 0, "update_cycles": 0, "estimator_exposed_cycles": 0}
        for n in model.weight_layers():
            self.layers[n.name] = {"op": n.op, **{p: _zero_phase() for p in PHASES},
                                   "estimator": {"cycles": 0, "hidden_steps": 0, "exposed_steps": 0,
                                                 "exposed_cycles": 0}}

    # -- masks ---------------------------------------------------------------
    def _error_mask_after(self, node, vals):
        act = self.model.activation_after(node)
        z = vals[node.output]
        if act is None:
            return np.ones(z.shape, bool)
        return ops.act_derivative(act.op, z, vals[act.output], act.attrs) != 0

    def _error_mask_before(self, value, vals):
        """Where the error of `value` can be non-zero (the previous activation's G), or None = dense."""
        p = self.producer.get(value)
        while p is not None and p.op in ("flatten", "reshape"):
            p = self.producer.get(p.inputs[0])
        if p is None or p.op not in ACTIVATION_OPS:
            return None
        g = ops.act_derivative(p.op, vals[p.inputs[0]], vals[p.output], p.attrs) != 0
        return g.reshape(vals[value].shape)

    def _receptive_counts(self, node, mask, nout):
        """Per output element: how many non-zero operands fall in its receptive field."""
        if node.op == "gemm":
            return np.broadcast_to(mask.sum(axis=1, keepdims=True).astype(np.float64),
                                   (mask.shape[0], nout)).copy()
        ones = np.ones(self.model.params[node.params["W"]].shape, np.float32)
        return ops.conv_forward(mask.astype(np.float32), ones, None, node.attrs)[0].astype(np.float64)

    # -- accounting ------------------------------------------------------------
    def account(self, params: Dict[str, np.ndarray], x: np.ndarray, update_elems: int) -> int:
        """Count one training step on `x` with the pre-update `params`; returns modelled cycles."""
        self.dense.params = params
        vals = self.dense.forward_values(x)
        pes = PE_ROWS * PE_COLS
        fill = PE_ROWS + PE_COLS
        step_cycles = 0
        for node in self.model.weight_layers():
            rec = self.layers[node.name]
            W = params[node.params["W"]]
            a = vals[node.inputs[0]]
            z = vals[node.output]
            A = a != 0
            nout = W.shape[0] if node.op == "conv" else z.shape[1]
            C_A = self._receptive_counts(node, A, nout)
            D = self._error_mask_after(node, vals).reshape(C_A.shape)
            per_out = float(W.size // (W.shape[0] if node.op == "conv" else nout))
            dense = int(C_A.size * per_out)
            need_bp = self.needed.get(node.inputs[0], False)
            need_wg = node.params["W"] in self.want
            G = self._error_mask_before(node.inputs[0], vals) if need_bp else None
            C_G = (C_A if G is not None and np.array_equal(G, A) else
                   self._receptive_counts(node, G, nout) if G is not None else np.full(C_A.shape, per_out))
            e = self.elem
            act = self.model.activation_after(node)
            out_nnz = int(np.count_nonzero(vals[act.output])) if act is not None else z.size
            d_nnz = int(D.sum())
            work = {
                "fp": (dense, int(C_A.sum()), W.size * e + int(A.sum()) * e + A.size // 8,
                       out_nnz * e + (z.size // 8 if act is not None else 0)),
                "bp": ((dense, int((D * C_G).sum()), W.size * e + d_nnz * e,
                        (int(G.sum()) if G is not None else a.size) * e) if need_bp else (0, 0, 0, 0)),
                "wg": ((dense, int((D * C_A).sum()), d_nnz * e + int(A.sum()) * e, W.size * e)
                       if need_wg else (0, 0, 0, 0)),
            }
            for phase, (dn, ex, rd, wr) in work.items():
                cyc = math.ceil(ex / pes) + fill if dn else 0
                r = rec[phase]
                r["dense_macs"] += dn
                r["executed_macs"] += ex
                r["skipped_macs"] += dn - ex
                r["buffer_read_bytes"] += rd
                r["buffer_write_bytes"] += wr
                r["cycles"] += cyc
                step_cycles += cyc
            est = math.ceil(z.size / ESTIMATOR_LANES)
            fp_cyc = math.ceil(work["fp"][1] / pes) + fill
            exposed = max(0, est - fp_cyc)
            es = rec["estimator"]
            es["cycles"] += est
            es["exposed_cycles"] += exposed
            es["hidden_steps" if exposed == 0 else "exposed_steps"] += 1
            step_cycles += exposed
            self.totals["estimator_exposed_cycles"] += exposed
        upd = math.ceil(update_elems / PE_COLS)
        self.totals["update_cycles"] += upd
        step_cycles += upd
        self.totals["steps"] += 1
        self.totals["cycles"] += step_cycles
        return step_cycles

    def report(self) -> dict:
        macs = {k: sum(self.layers[n][p][k] for n in self.layers for p in PHASES)
                for k in ("dense_macs", "executed_macs", "skipped_macs")}
        layers = [{"name": n, **rec, "estimator": {**rec["estimator"],
                   "hidden": rec["estimator"]["exposed_steps"] == 0}} for n, rec in self.layers.items()]
        seconds = self.totals["cycles"] / (CLOCK_MHZ * 1e6)
        return {"totals": {**self.totals, **macs, "modelled_seconds": seconds}, "layers": layers}
