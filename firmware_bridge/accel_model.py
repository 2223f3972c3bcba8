"""The emulator's accounting: each training step it runs, costed on the modelled accelerator.

The accelerator is the one of runtime/accel (spec.json, read by both this module and
`edgetune simulate`), and every cycle and byte here comes from the same per-layer function as
simulate's constraint design (runtime/accel/cost.py: work items of the operand masks, planned
partition over the PE rows, estimator beside FP, DRAM bound). The two agree on the same step
(tests/test_accel_agree.py). Per Conv/Gemm layer and phase (FP, BP, WG):

* MACs ``dense`` and ``required``: from the hosted engine's own kernel counters when it has
  them (the native engine, ``Engine.step_counters``), else from layer_stats on the step's values
  and gradients (the dense reference); ``required`` is the pair-level constraint count of
  runtime/layer_stats.py. ``executed = required``: the modelled array, like the RTL's
  (hardware/), multiplies exactly the pairs the constraints require, whatever the host's CPU
  kernels did (their register tiles may run dense and pad narrow layers: those counts stay in
  the host's own report); ``skipped = dense - executed``.
* operand masks: from the activation store the kernels kept for backward
  (``Engine.step_operands``), or from the same values and gradients;
* ``cycles`` and ``buffer_read_bytes``/``buffer_write_bytes`` (the constraint design's memory
  traffic: compressed activations in the constraint table's stored forms, errors at |G|,
  weights): from runtime/accel/cost.py at the device's element width;
* the estimator's cycles, hidden when they do not exceed the layer's FP; the update takes
  ``ceil((trainable elements + merged elements) / pe_cols)`` cycles, where a tensor that k layers
  share (runtime/ties.py) merges its k weight gradients with k - 1 adds per element.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from ..runtime.accel.cost import PHASES, Operands, layer_costs
from ..runtime.accel.spec import capabilities, load_spec  # noqa: F401  (capabilities: the device's HELLO)
from ..runtime.constraints import input_rule, rule_of_node

SPEC = load_spec()
PE_ROWS, PE_COLS = SPEC["pe_rows"], SPEC["pe_cols"]
KINDS = ("dense", "required", "executed")
SOURCE_KERNELS = "hosted engine kernel counters"
SOURCE_TABLE = "layer_stats.layer_table (analytic)"


def _zero_phase():
    return {"dense_macs": 0, "required_macs": 0, "executed_macs": 0, "skipped_macs": 0,
            "buffer_read_bytes": 0, "buffer_write_bytes": 0, "cycles": 0}


class AccelModel:
    """Turns each step's counts and operand masks into accelerator counters per layer and phase."""

    def __init__(self, model, trainable, elem_bytes: int = 4, spec: Optional[dict] = None):
        self.model, self.elem, self.spec = model, elem_bytes, spec or SPEC
        self.trainable = list(trainable)
        self.update_elems = int(sum(model.params[k].size for k in self.trainable))
        readers = model.param_readers()
        self.merge_elems = int(sum((len(readers[k]) - 1) * model.params[k].size
                                   for k in self.trainable if len(readers.get(k, ())) > 1))
        self.layers: Dict[str, dict] = {}
        self.totals = {"steps": 0, "cycles": 0, "update_cycles": 0, "estimator_exposed_cycles": 0}
        # what the hosted engine kept for backward: stored = values (and state bits) + plan (position lists)
        self.activation_store = {"dense": 0, "stored": 0, "values": 0, "plan": 0}
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
        """Call before `engine.train_step(x, y)`. An engine that counts in its kernels needs
        nothing (None); for the others the analytic counts are taken now, on the pre-update
        parameters."""
        if engine.has_step_counters:
            return None
        return self.analytic_step(engine, x, y)

    def kernel_step(self, engine) -> dict:
        """Counts and operand masks of the engine's most recent forward+backward, from its kernels."""
        counters, operands = engine.step_counters(), engine.step_operands()
        per_layer = {lay["name"]: lay for lay in counters["layers"]}
        step = {"source": SOURCE_KERNELS, "activation_store": dict(counters["activation_bytes"]), "layers": {}}
        for node in self.model.weight_layers():
            if node.name not in per_layer or node.name not in operands:
                raise RuntimeError(f"the hosted engine has no kernel counters for layer {node.name}")
            c = per_layer[node.name]
            macs = {ph: {"dense": int(c[ph]["dense"]), "required": int(c[ph]["required"]),
                         "executed": int(c[ph]["required"])} for ph in PHASES}
            step["layers"][node.name] = {"macs": macs,
                                         "operands": self._kernel_operands(node, *operands[node.name]),
                                         "act_bytes": c.get("act_bytes")}
        return step

    def _kernel_operands(self, node, info_in, info_out) -> Operands:
        """The masks of the activation store (NHWC SparseInfo) in the layer's NCHW / (N, F) layout."""
        def layout(mask):
            n, h, w, c = mask.shape
            return mask.reshape(n, c) if node.op == "gemm" else np.ascontiguousarray(mask.transpose(0, 3, 1, 2))

        g_out = layout(info_out.mask_g())
        return Operands(a_in=layout(info_in.decompress() != 0), g_in=layout(info_in.mask_g()), g_out=g_out,
                        d_nz=g_out, out_nnz=int(info_out.nnz),
                        in_rule=input_rule(self.model.producer(node.inputs[0])),
                        out_rule=rule_of_node(self.model.activation_after(node)))

    def analytic_step(self, engine, x, y) -> dict:
        """Counts from layer_stats.layer_table (the analytic definition) for an engine without
        kernel counters, on its current parameters; executed = required."""
        from ..runtime.engines.dense import DenseEngine
        from ..runtime.layer_stats import layer_table

        if isinstance(engine, DenseEngine):
            ref = engine
        else:
            ref = DenseEngine()
            ref.load(self.model, self.trainable, loss=engine.loss_name)
            ref.set_params(engine.get_params())
        _, _, vals, dvals = ref.forward_backward_values(x, y)
        store = {"dense": 0, "stored": 0, "values": 0, "plan": 0}
        step = {"source": SOURCE_TABLE, "layers": {}, "activation_store": store}
        for node, t in zip(self.model.weight_layers(), layer_table(self.model, vals, dvals, self.trainable)):
            # the constraint table's stored form: state bits and values, no position lists
            act = {**t["act_bytes"], "values": t["act_bytes"]["stored"], "plan": 0}
            step["layers"][node.name] = {
                "macs": {ph: {"dense": int(t["macs_dense"][ph]), "required": int(t["macs_required"][ph]),
                              "executed": int(t["macs_required"][ph])} for ph in PHASES},
                "operands": Operands.from_values(self.model, node, vals, dvals), "act_bytes": act}
            for k in step["activation_store"]:
                step["activation_store"][k] += act[k]
        return step

    # -- accounting ---------------------------------------------------------------------
    def account(self, step: dict) -> int:
        """Add one training step's counts (from kernel_step or analytic_step); returns its cycles."""
        step_cycles = 0
        last = {"source": step["source"], "phases": {ph: {f"{k}_macs": 0 for k in KINDS + ("skipped",)}
                                                      for ph in PHASES},
                "layers": [], "activation_store": dict(step["activation_store"])}
        for node in self.model.weight_layers():
            s = step["layers"][node.name]
            step_cycles += self._account_layer(node, s["macs"], s["operands"], last["phases"])
            layer = {"name": node.name, **{ph: {f"{k}_macs": int(s["macs"][ph][k]) for k in KINDS} for ph in PHASES}}
            if s.get("act_bytes"):
                layer["act_bytes"] = dict(s["act_bytes"])
            last["layers"].append(layer)
        upd = math.ceil((self.update_elems + self.merge_elems) / self.spec["pe_cols"])
        self.totals["update_cycles"] += upd
        step_cycles += upd
        self.totals["steps"] += 1
        self.totals["cycles"] += step_cycles
        for k in self.activation_store:
            self.activation_store[k] += int(step["activation_store"].get(k, 0))
        self.source = step["source"]
        last["cycles"] = step_cycles
        self.last = last
        return step_cycles

    def _account_layer(self, node, macs, ops: Operands, last_phases) -> int:
        need = {ph: macs[ph]["dense"] > 0 for ph in PHASES}
        wshape = self.model.params[node.params["W"]].shape
        cost = layer_costs(node, wshape, ops, need, self.spec, designs=("constraint",), eb=self.elem)["constraint"]
        rec, cycles = self.layers[node.name], 0
        for ph in PHASES:
            dn, rq, ex = (macs[ph][k] for k in KINDS)
            c = cost[ph]
            add = {"dense_macs": dn, "required_macs": rq, "executed_macs": ex, "skipped_macs": dn - ex,
                   "buffer_read_bytes": int(round(c["dram_read_bytes"])),
                   "buffer_write_bytes": int(round(c["dram_write_bytes"])), "cycles": c["cycles"]}
            for k, v in add.items():
                rec[ph][k] += v
                if k.endswith("_macs"):
                    last_phases[ph][k] += v
            cycles += c["cycles"]
        est, exposed = math.ceil(ops.g_out.size / self.spec["estimator_lanes"]), cost["fp"]["estimator_exposed_cycles"]
        es = rec["estimator"]
        es["cycles"] += est
        es["exposed_cycles"] += exposed
        es["hidden_steps" if exposed == 0 else "exposed_steps"] += 1
        self.totals["estimator_exposed_cycles"] += exposed
        return cycles

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
        seconds = self.totals["cycles"] / (self.spec["clock_mhz"] * 1e6)
        out = {"counter_source": self.source,
               "totals": {**self.totals, **macs, "modelled_seconds": seconds, "phases": phases,
                          "activation_store_bytes": dict(self.activation_store)},
               "last_step": self.last, "layers": layers}
        if self.errors:
            out["count_errors"] = {"steps": self.errors, "last": self.last_error}
        return out
