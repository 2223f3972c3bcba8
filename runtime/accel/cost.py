"""The cost of one Conv/Gemm layer's training step on the modelled accelerator, per design and phase.

Three designs share the PE array, buffers, clock and DRAM port of the spec (spec.json):

* ``dense``: no zero is skipped;
* ``runtime-detect``: skips the zero operands it finds at run time (FP: input activations, BP:
  errors, WG: both), pays detection passes, index generation and load imbalance, and computes
  every BP output (it cannot know G_{l-1} before BP), like SparseTrain and TensorDash;
* ``constraint``: the paper's design. Its MACs are exactly layer_stats' required counts; masks,
  counts and the work partition come from FP (the estimator runs beside FP), and what FP keeps
  is stored in the form the constraint table gives (runtime/constraints.py).

`edgetune simulate` compares all three; the emulator counts its steps with the constraint
design alone. docs/SIMULATION.md describes the model and its simplifications.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from ..constraints import Rule, input_rule, rule_of_node
from .dataflow import planned, static_waves, work_items
from .spec import elem_bytes, sram_pj_per_64b

DESIGNS = ("dense", "runtime-detect", "constraint")
PHASES = ("fp", "bp", "wg")
PARTS = ("mac", "buffer", "dram", "other")
# which buffer holds the broadcast operand, the lane operand and the output, per phase
BUFFERS = {"fp": ("activation", "weight", "activation"), "bp": ("error", "weight", "error"),
           "wg": ("activation", "error", "weight")}
# the buffer DRAM traffic lands in or leaves from, per phase
DRAM_SIDE = {"fp": "activation", "bp": "error", "wg": "activation"}


@dataclass
class Operands:
    """The masks of one Conv/Gemm layer's operands on one training step (NCHW or (N, F))."""

    a_in: np.ndarray      # non-zeros of the input x
    g_in: np.ndarray      # G of the input: where BP computes g_{l-1}
    g_out: np.ndarray     # G of the output: where d_l may be non-zero
    d_nz: np.ndarray      # the actual non-zero errors d_l (what runtime detection finds)
    out_nnz: int          # non-zeros of the layer's output activation
    in_rule: Rule         # how the input is stored (its producer's rule, or the analysed input's)
    out_rule: Rule        # how the output is stored (the rule of the activation after the layer)

    @classmethod
    def from_values(cls, model, node, vals, dvals) -> "Operands":
        """From the values and gradients of a recorded step (DenseEngine.forward_backward_values)."""
        from ..layer_stats import layer_masks

        m = layer_masks(model, node, vals, dvals)
        return cls(a_in=m["a_in"], g_in=m["g_in"], g_out=m["g_out"], d_nz=m["d"] != 0,
                   out_nnz=int(np.count_nonzero(m["a"])), in_rule=input_rule(m["prev"]),
                   out_rule=rule_of_node(m["act"]))


class _Energy:
    """Energy per byte of each buffer and of DRAM, per MAC and per comparison."""

    def __init__(self, spec: dict, eb: int):
        self.buf = {b: sram_pj_per_64b(kb, spec) / 8.0 for b, kb in spec["buffer_kb"].items()}
        self.dram = spec["dram_energy_pj_per_64b"] / 8.0
        self.mac = sum(spec["mac_energy_pj"][spec["precision"]].values())
        self.compare = spec["compare_energy_pj"]
        self.eb = eb


def layer_costs(node, wshape, ops: Operands, need: Dict[str, bool], spec: dict, designs=DESIGNS,
                eb: Optional[int] = None) -> Dict[str, Dict[str, dict]]:
    """{design: {phase: cost}} of one layer. `need[phase]` is False for a phase the step skips
    (BP when nothing upstream trains, WG for a frozen layer); `eb` overrides the bytes per element."""
    eb = eb or elem_bytes(spec)
    nbytes = _tensor_bytes(ops, int(np.prod(wshape)), eb)
    energy = _Energy(spec, eb)
    masks = {"dense": (np.ones_like(ops.a_in), np.ones_like(ops.a_in), np.ones_like(ops.g_out)),
             "runtime-detect": (ops.a_in, np.ones_like(ops.a_in), ops.d_nz),
             "constraint": (ops.a_in, ops.g_in, ops.g_out)}
    out = {}
    for des in designs:
        items = work_items(node, wshape, *masks[des], spec["pe_cols"])
        out[des] = {ph: (_phase(des, ph, items[ph], ops, nbytes, spec, energy) if need[ph] else empty_cost())
                    for ph in PHASES}
    return out


def _tensor_bytes(ops: Operands, w_elems: int, eb: int) -> dict:
    """Bytes of every tensor a layer's phases move, dense and in the constraint design's stored forms."""
    x_size, z_size = ops.a_in.size, ops.g_out.size
    return {"w": w_elems * eb, "x": x_size * eb, "z": z_size * eb,
            "x_stored": ops.in_rule.stored_bytes(x_size, int(ops.a_in.sum()), eb),
            "out_stored": ops.out_rule.stored_bytes(z_size, ops.out_nnz, eb),
            "d_stored": int(ops.g_out.sum()) * eb,           # values at G positions; the mask is known
            "g_in_bits": x_size * ops.in_rule.state_bits / 8 if ops.in_rule.restricts_g else 0,
            "g_in_write": int(ops.g_in.sum()) * eb}


def dram_traffic(design: str, phase: str, b: dict):
    """(bytes read, bytes written) between DRAM and the array for one phase of one layer."""
    if design == "constraint":
        return {"fp": (b["w"] + b["x_stored"], b["out_stored"]),
                "bp": (b["w"] + b["d_stored"] + b["g_in_bits"], b["g_in_write"]),
                "wg": (b["d_stored"] + b["x_stored"], b["w"])}[phase]
    return {"fp": (b["w"] + b["x"], b["z"]), "bp": (b["w"] + b["z"] + b["x"], b["x"]),
            "wg": (b["z"] + b["x"], b["w"])}[phase]


def _lane_and_output_bytes(design: str, phase: str, b: dict):
    """(bytes of the lane operand loaded into the scratchpads, bytes of results written)."""
    if design == "constraint":
        lane = {"fp": b["w"], "bp": b["w"], "wg": b["d_stored"]}[phase]
        return lane, {"fp": b["out_stored"], "bp": b["g_in_write"], "wg": b["w"]}[phase]
    lane = {"fp": b["w"], "bp": b["w"], "wg": b["z"]}[phase]
    return lane, {"fp": b["z"], "bp": b["x"], "wg": b["w"]}[phase]


def _phase(des, ph, it, ops: Operands, b: dict, spec: dict, e: _Energy) -> dict:
    """Cycles, utilisation, bytes and energy of one design and phase."""
    rows, fill = spec["pe_rows"], spec["pe_rows"] + spec["pe_cols"]
    cyc_items = it["cyc"]
    compute = (planned(cyc_items, rows) if des == "constraint" else static_waves(cyc_items, rows)) + fill
    extra = {"detect_cycles": 0, "index_cycles": 0, "estimator_exposed_cycles": 0,
             "imbalance_cycles": compute - fill - math.ceil(int(cyc_items.sum()) / rows)}
    e_other, buf_e_extra, buf_bytes_extra = 0.0, 0.0, 0.0
    if des == "runtime-detect":
        det_cycles, e_other, buf_e_extra, buf_bytes_extra = _detection(ph, ops, spec, e, extra)
        compute += det_cycles
    if des == "constraint" and ph == "fp":
        est = math.ceil(ops.g_out.size / spec["estimator_lanes"])
        extra["estimator_exposed_cycles"] = exposed = max(0, est - compute)
        compute += exposed
        e_other += ops.g_out.size * e.compare                          # the estimator classifies z
    rd, wr = dram_traffic(des, ph, b)
    dram_cycles = math.ceil((rd + wr) / spec["dram_bytes_per_cycle"])
    cycles = max(compute, dram_cycles)
    lane, written = _lane_and_output_bytes(des, ph, b)
    b_bc, b_lane, b_out = BUFFERS[ph]
    buf_e = (it["bcast"] * e.eb * e.buf[b_bc]                           # broadcast operand reads
             + lane * e.buf[b_lane]                                     # lane operand into scratchpads
             + it["macs"] * e.eb * e.buf["pe_scratchpad"]               # lane operand per MAC
             + written * e.buf[b_out]                                   # results
             + (rd + wr) * e.buf[DRAM_SIDE[ph]]                         # DRAM data passes a buffer once
             + buf_e_extra)
    e_other += spec["static_power_w"] * cycles / (spec["clock_mhz"] * 1e6) * 1e12
    energy = {"mac": it["macs"] * e.mac, "buffer": buf_e, "dram": (rd + wr) * e.dram, "other": e_other}
    energy["total"] = sum(energy.values())
    pes = spec["pe_rows"] * spec["pe_cols"]
    return {"macs": it["macs"], "cycles": int(cycles), "compute_cycles": int(compute),
            "dram_cycles": int(dram_cycles), "utilisation": it["macs"] / (cycles * pes),
            "dram_bytes": float(rd + wr), "dram_read_bytes": float(rd), "dram_write_bytes": float(wr),
            "buffer_bytes": float(it["bcast"] * e.eb + lane + written + rd + wr + buf_bytes_extra),
            "energy_pj": energy, **extra}


def _detection(ph, ops: Operands, spec: dict, e: _Energy, extra: dict):
    """Runtime detection of one phase: exposed cycles, comparator energy, extra buffer energy and bytes.
    FP scans the input, BP the error, WG both, and each indexes the non-zeros it found."""
    x_size, z_size = ops.a_in.size, ops.g_out.size
    n_x, n_d = int(ops.a_in.sum()), int(ops.d_nz.sum())
    n_scan, n_nz = {"fp": (x_size, n_x), "bp": (z_size, n_d), "wg": (x_size + z_size, n_x + n_d)}[ph]
    first = {"fp": "activation", "bp": "error", "wg": "activation"}[ph]
    det = math.ceil(n_scan / spec["detect_elems_per_cycle"])
    idx = math.ceil(n_nz / spec["index_elems_per_cycle"])
    extra["detect_cycles"], extra["index_cycles"] = det, idx
    idx_bytes = n_nz * spec["index_bits"] / 8
    if ph == "wg":
        scan_e = x_size * e.eb * e.buf["activation"] + z_size * e.eb * e.buf["error"]
    else:
        scan_e = n_scan * e.eb * e.buf[first]
    buf_e = scan_e + 2 * idx_bytes * e.buf[first]                     # index list write + read
    exposed = int(round((1 - spec["detect_overlap"]) * (det + idx)))
    return exposed, n_scan * e.compare, buf_e, n_scan * e.eb + 2 * idx_bytes


def empty_cost() -> dict:
    """The cost of a phase the step does not run."""
    return {"macs": 0, "cycles": 0, "compute_cycles": 0, "dram_cycles": 0, "utilisation": 0.0,
            "dram_bytes": 0.0, "dram_read_bytes": 0.0, "dram_write_bytes": 0.0, "buffer_bytes": 0.0,
            "detect_cycles": 0, "index_cycles": 0, "estimator_exposed_cycles": 0, "imbalance_cycles": 0,
            "energy_pj": {p: 0.0 for p in PARTS + ("total",)}}
