"""Performance model of the sparse-training accelerator (PE array, buffers, estimator).

The arithmetic is done by a hosted engine, and so is the counting: this module has
no MAC definition of its own and runs no forward pass of its own when the hosted
engine has kernel counters. Per Conv/Gemm layer and phase (FP, BP, WG) it takes

* ``dense``, ``required`` and ``executed`` MACs from the hosted engine's per-step
  kernel counters (``engine.last_step``, filled by every forward+backward of the
  native engine). ``required`` is the pair-level constraint count that
  ``runtime.layer_stats.layer_table`` defines (DESIGN §1) and that
  ``runtime.simulate``'s constraint design uses; ``executed`` is what the kernels
  really multiplied (it includes SIMD tail lanes, so a narrow layer can execute a
  little more than ``dense``); ``skipped = dense - executed``.
  The operand statistics used for buffer bytes (non-zeros, |G|, element counts)
  come from the activation store the kernels keep for backward (the SparseInfo of
  each layer's input and output), so nothing is recomputed.
* When the hosted engine has no kernel counters (the dense engine), the counts come
  from ``layer_stats.layer_table`` on the step's values and gradients
  (``DenseEngine.forward_backward_values``, run on the pre-update parameters), and
  ``executed = required``: the constraint dataflow performs exactly the required
  MACs. This is the analytic definition, not a private one.

From those counts it models

* on-chip buffer reads/writes in bytes: weights (``W.size × elem``), compressed
  activations (mask/state bits + non-zeros at the device's element width: 1 bit
  for ReLU and for an analysed input, 2 bits for ReLU6/hard-swish, none and
  dense values for unconstrained activations), errors at the |G| positions, and
  weight gradients;
* cycles: ``ceil(executed / PEs) + rows + cols`` (array fill) per layer and
  phase; the non-zero position estimator classifies ``estimator_lanes`` output
  elements per cycle *in parallel with FP*; its cycles are hidden when they do
  not exceed the layer's FP cycles, otherwise the excess is exposed; the update
  takes ``ceil(trainable elements / cols)`` cycles.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from ..runtime.ir import ACTIVATION_OPS

PE_ROWS, PE_COLS = 16, 16
CLOCK_MHZ = 200
ESTIMATOR_LANES = 16
BUFFERS = {"weight_bytes": 256 * 1024, "activation_bytes": 512 * 1024, "error_bytes": 256 * 1024,
           "staging_bytes": 64 * 1024 * 1024}

PHASES = ("fp", "bp", "wg")
KINDS = ("dense", "required", "executed")
SOURCE_KERNELS = "hosted engine kernel counters"
SOURCE_TABLE = "layer_stats.layer_table (analytic; executed = required)"
# native SparseInfo.act codes: -1 analysed input, 1 ReLU, 2 Clip, 3 hard-swish
_MASK_BITS = {-1: 1, 1: 1, 2: 2, 3: 2}


def capabilities() -> dict:
    return {"pe_array": [PE_ROWS, PE_COLS], "clock_mhz": CLOCK_MHZ, "estimator_lanes": ESTIMATOR_LANES,
            "buffers": dict(BUFFERS)}


def _zero_phase():
    return {"dense_macs": 0, "required_macs": 0, "executed_macs": 0, "skipped_macs": 0,
            "buffer_read_bytes": 0, "buffer_write_bytes": 0, "cycles": 0}


def has_kernel_counters(engine) -> bool:
    """True when the engine reports its kernels' per-step counters and activation stores."""
    return hasattr(engine, "last_step") and hasattr(engine, "step_counters") and hasattr(engine, "layers")


class AccelModel:
    """Turns the hosted engine's per-step counts into accelerator counters per layer and phase."""

    def __init__(self, model, trainable, elem_bytes: int = 4):
        self.model, self.elem = model, elem_bytes
        self.want = set(trainable)
        self.trainable = list(trainable)
        self.layers: Dict[str, dict] = {}
        self.totals = {"steps": 0, "cycles": 0, "update_cycles": 0, "estimator_exposed_cycles": 0}
        self.activation_store = {"dense": 0, "stored": 0}   # what the hosted engine kept for backward
        self.producer = {n.output: n for n in model.nodes}
        self.source: Optional[str] = None
        self.last: Optional[dict] = None
        self.errors = 0
        self.last_error: Optional[str] = None
        for n in model.weight_layers():
            self.layers[n.name] = {"op": n.op, **{p: _zero_phase() for p in PHASES},
                                   "estimator": {"cycles": 0, "hidden_steps": 0, "exposed_steps": 0,
                                                 "exposed_cycles": 0}}

    # -- where the counts come from ------------------------------------------------
    def before_step(self, engine, x, y) -> Optional[dict]:
        """Call before `engine.train_step(x, y)`. Engines with kernel counters need nothing (None);
        for the others the analytic counts are taken now, on the pre-update parameters."""
        if has_kernel_counters(engine):
            return None
        return self.analytic_step(engine, x, y)

    def kernel_step(self, engine) -> dict:
        """Counts of the engine's most recent forward+backward, from its kernels' own counters."""
        counters = engine.step_counters()
        step = {"source": SOURCE_KERNELS, "activation_store": dict(counters["activation_bytes"]), "layers": {}}
        for node in self.model.weight_layers():
            c = engine.last_step.get(node.name)
            lay = engine.layers.get(node.name)
            if c is None or lay is None:
                raise RuntimeError(f"the hosted engine has no kernel counters for layer {node.name}")
            i, o = lay.k.input_info, lay.k.output_info
            step["layers"][node.name] = {
                "macs": {ph: {k: int(c[ph][k]) for k in KINDS} for ph in PHASES},
                "in": _info_operand(i), "out": _info_operand(o)}
        return step

    def analytic_step(self, engine, x, y) -> dict:
        """Counts from layer_stats.layer_table (the analytic definition) for an engine without
        kernel counters; executed = required."""
        from ..runtime.engines.dense import DenseEngine
        from ..runtime.layer_stats import g_mask, layer_table

        if isinstance(engine, DenseEngine):
            ref = engine
        else:
            ref = DenseEngine()
            ref.load(self.model, self.trainable, loss=getattr(engine, "loss_name", "cross_entropy"))
            ref.set_params(engine.get_params())
        _, _, vals, dvals = ref.forward_backward_values(x, y)
        table = {r["name"]: r for r in layer_table(self.model, vals, dvals, self.trainable)}
        step = {"source": SOURCE_TABLE, "layers": {}}
        store = {"dense": 0, "stored": 0}
        for node in self.model.weight_layers():
            t = table[node.name]
            act = self.model.activation_after(node)
            z = vals[node.output]
            a = vals[act.output] if act is not None else z
            out = _array_operand(a, g_mask(act.op if act else None, z, act.attrs if act else {}),
                                 _bits_for(act, constrained_input=False))
            src = self._producer(node.inputs[0])
            xin = vals[node.inputs[0]]
            if src is not None and src.op in ACTIVATION_OPS:
                g_in = g_mask(src.op, vals[src.inputs[0]], src.attrs).reshape(xin.shape)
                bits = _bits_for(src, constrained_input=False)
            else:   # model input, pooling, ...: analysed for non-zeros (1-bit mask), error dense
                g_in = np.ones(xin.shape, bool)
                bits = 0 if src is not None and src.op in ("conv", "gemm") else 1
            step["layers"][node.name] = {
                "macs": {ph: {"dense": int(t["macs_dense"][ph]), "required": int(t["macs_required"][ph]),
                              "executed": int(t["macs_required"][ph])} for ph in PHASES},
                "in": _array_operand(xin, g_in, bits), "out": out}
            store["dense"] += out["size"] * 4
            store["stored"] += out["mask_bytes"] + out["nnz"] * 4
        step["activation_store"] = store
        return step

    def _producer(self, value):
        p = self.producer.get(value)
        while p is not None and p.op in ("flatten", "reshape"):   # masks survive reshaping
            p = self.producer.get(p.inputs[0])
        return p

    # -- accounting ---------------------------------------------------------------------
    def account(self, step: dict, update_elems: int) -> int:
        """Add one training step's counts (from kernel_step or analytic_step); returns modelled cycles."""
        pes = PE_ROWS * PE_COLS
        fill = PE_ROWS + PE_COLS
        e = self.elem
        step_cycles = 0
        last = {"source": step["source"], "phases": {ph: {f"{k}_macs": 0 for k in KINDS + ("skipped",)}
                                                      for ph in PHASES}}
        for node in self.model.weight_layers():
            rec, s = self.layers[node.name], step["layers"][node.name]
            w_bytes = self.model.params[node.params["W"]].size * e
            i, o = s["in"], s["out"]
            in_bytes = i["mask_bytes"] + i["nnz"] * e          # compressed input activation
            out_bytes = o["mask_bytes"] + o["nnz"] * e          # compressed output activation
            traffic = {"fp": (w_bytes + in_bytes, out_bytes),
                       "bp": (w_bytes + o["g"] * e, i["g"] * e),   # errors live only at |G| positions
                       "wg": (o["g"] * e + in_bytes, w_bytes)}
            for ph in PHASES:
                m = s["macs"][ph]
                dn, rq, ex = m["dense"], m["required"], m["executed"]
                rd, wr = traffic[ph] if dn else (0, 0)
                cyc = math.ceil(ex / pes) + fill if dn else 0
                r = rec[ph]
                r["dense_macs"] += dn
                r["required_macs"] += rq
                r["executed_macs"] += ex
                r["skipped_macs"] += dn - ex
                r["buffer_read_bytes"] += rd
                r["buffer_write_bytes"] += wr
                r["cycles"] += cyc
                step_cycles += cyc
                lp = last["phases"][ph]
                lp["dense_macs"] += dn
                lp["required_macs"] += rq
                lp["executed_macs"] += ex
                lp["skipped_macs"] += dn - ex
            est = math.ceil(o["size"] / ESTIMATOR_LANES)
            fp_cyc = math.ceil(s["macs"]["fp"]["executed"] / pes) + fill
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
        for k in self.activation_store:
            self.activation_store[k] += int(step["activation_store"][k])
        self.source = step["source"]
        last["cycles"] = step_cycles
        self.last = last
        return step_cycles

    def account_error(self, exc: Exception) -> None:
        """The step ran but could not be counted: say so instead of failing the step."""
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def report(self) -> dict:
        kinds = ("dense_macs", "required_macs", "executed_macs", "skipped_macs")
        macs = {k: sum(self.layers[n][p][k] for n in self.layers for p in PHASES) for k in kinds}
        phases = {p: {k: sum(self.layers[n][p][k] for n in self.layers) for k in kinds} for p in PHASES}
        layers = [{"name": n, **rec, "estimator": {**rec["estimator"],
                   "hidden": rec["estimator"]["exposed_steps"] == 0}} for n, rec in self.layers.items()]
        seconds = self.totals["cycles"] / (CLOCK_MHZ * 1e6)
        out = {"counter_source": self.source,
               "totals": {**self.totals, **macs, "modelled_seconds": seconds, "phases": phases,
                          "activation_store_bytes": dict(self.activation_store)},
               "last_step": self.last, "layers": layers}
        if self.errors:
            out["count_errors"] = {"steps": self.errors, "last": self.last_error}
        return out


# -- operand statistics ------------------------------------------------------------------
def _info_operand(info) -> dict:
    """Element count, non-zeros, |G| and mask/state bytes of an activation the kernels stored."""
    size = int(info.size)
    if info.constrained:
        nnz, bits = int(info.nnz), _MASK_BITS.get(int(info.act), 1)
    else:
        nnz, bits = size, 0
    return {"size": size, "nnz": nnz, "g": int(info.g_count), "mask_bytes": math.ceil(size * bits / 8)}


def _bits_for(act, constrained_input: bool) -> int:
    """Mask/state bits per element an activation's compressed form needs (0 = stored dense)."""
    if act is None:
        return 1 if constrained_input else 0
    if act.op == "relu":
        return 1
    if act.op == "clip" and act.attrs.get("min", None) == 0 and act.attrs.get("max", 0) > 0:
        return 2
    if act.op == "hardswish":
        return 2
    return 0


def _array_operand(a, g, bits) -> dict:
    size = int(a.size)
    nnz = int(np.count_nonzero(a)) if bits else size
    return {"size": size, "nnz": nnz, "g": int(np.count_nonzero(g)), "mask_bytes": math.ceil(size * bits / 8)}
