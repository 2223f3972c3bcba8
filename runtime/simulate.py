"""Accelerator performance and energy model: dense vs runtime-detect vs constraint (issue 5).

`edgetune simulate` runs real training steps, records the real masks of one step
and models three designs on the same PE array, buffers and clock:

* ``dense``          no zero is skipped;
* ``runtime-detect`` skips zero operands found at run time (FP: input
  activations, BP: errors, WG: both) and pays detection passes, index
  generation and load-imbalance stalls; it computes every BP output (it cannot
  know G_{l-1} before BP), like SparseTrain / TensorDash;
* ``constraint``     (the paper's design) MACs are exactly
  ``layer_stats.layer_table``'s required counts; masks, counts and the work
  partition come from FP (estimator in parallel with FP); stored tensors are
  compressed by the masks.

Dataflow shared by all three (docs/SIMULATION.md): each PE row takes one work
item (FP: an output pixel / sample; BP: an input pixel / sample; WG: a weight
row (tap, input channel)); the row's ``pe_cols`` lanes share one broadcast
operand (FP: input activation, BP: error, WG: input activation) and each lane
owns one output of the item. A row spends ``broadcasts x ceil(lanes / pe_cols)``
cycles on an item; grouped convs pack ``pe_cols // lanes`` groups side by side.
All parameters live in ``sim_config.json``.
"""
from __future__ import annotations

import copy
import json
import math
import os
from typing import Dict, List, Optional

import numpy as np

from .errors import UsageError

DESIGNS = ("dense", "runtime-detect", "constraint")
PHASES = ("fp", "bp", "wg")
PARTS = ("mac", "buffer", "dram", "other")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sim_config.json")
BENCH_MODELS = ("bench_vgg_relu", "bench_resnet_relu", "bench_mobilenet_relu6", "bench_cnn_hardswish")
PAPER = {"vs_dense": 2.2, "vs_runtime_detect": (1.38, 1.46)}


# --------------------------------------------------------------------------- config
def load_config(path: Optional[str] = None) -> dict:
    """Defaults from sim_config.json, overridden by the user's file; returns {key: value}."""
    with open(DEFAULT_CONFIG, encoding="utf-8") as f:
        raw = json.load(f)
    cfg = {k: copy.deepcopy(v["value"]) for k, v in raw.items() if not k.startswith("_")}
    if path is None:
        return cfg
    try:
        with open(path, encoding="utf-8") as f:
            user = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--config {path}: not a readable JSON file ({exc})") from None
    if not isinstance(user, dict):
        raise UsageError(f"--config {path}: expected a JSON object of parameters")
    for k, v in user.items():
        if k.startswith("_"):
            continue
        if k not in cfg:
            raise UsageError(f"--config {path}: unknown parameter {k!r} (known: {', '.join(sorted(cfg))})")
        v = v["value"] if isinstance(v, dict) and "value" in v else v
        if isinstance(cfg[k], dict) and isinstance(v, dict):
            merged = dict(cfg[k])
            merged.update(v)
            v = merged
        cfg[k] = v
    _check_config(cfg, path)
    return cfg


def _check_config(cfg: dict, where) -> None:
    def bad(msg):
        raise UsageError(f"--config {where}: {msg}")

    for k in ("pe_rows", "pe_cols", "estimator_lanes", "detect_elems_per_cycle", "index_elems_per_cycle",
              "index_bits", "measure_steps"):
        if not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 1:
            bad(f"{k} must be a whole number >= 1, got {cfg[k]!r}")
    if not isinstance(cfg["warmup_steps"], int) or cfg["warmup_steps"] < 0:
        bad(f"warmup_steps must be a whole number >= 0, got {cfg['warmup_steps']!r}")
    for k in ("clock_mhz", "dram_bytes_per_cycle", "dram_energy_pj_per_64b", "compare_energy_pj", "lr"):
        if not isinstance(cfg[k], (int, float)) or cfg[k] <= 0:
            bad(f"{k} must be a positive number, got {cfg[k]!r}")
    if not isinstance(cfg["static_power_w"], (int, float)) or cfg["static_power_w"] < 0:
        bad("static_power_w must be >= 0")
    if not isinstance(cfg["detect_overlap"], (int, float)) or not 0 <= cfg["detect_overlap"] <= 1:
        bad("detect_overlap must be between 0 and 1")
    if cfg["precision"] not in cfg["mac_energy_pj"]:
        bad(f"precision {cfg['precision']!r} has no entry in mac_energy_pj")
    for k, v in cfg["buffer_kb"].items():
        if not isinstance(v, (int, float)) or v <= 0:
            bad(f"buffer_kb.{k} must be a positive number")
    sram = cfg["sram_energy_pj_per_64b"]
    if len(sram.get("size_kb", [])) < 2 or len(sram["size_kb"]) != len(sram.get("pj", [])):
        bad("sram_energy_pj_per_64b needs matching size_kb and pj lists of at least 2 points")


def sram_pj_per_64b(size_kb: float, cfg: dict) -> float:
    """Energy of one 64-bit access to an SRAM of `size_kb`: log-log interpolation of the table."""
    xs = np.log(np.asarray(cfg["sram_energy_pj_per_64b"]["size_kb"], float))
    ys = np.log(np.asarray(cfg["sram_energy_pj_per_64b"]["pj"], float))
    x = math.log(size_kb)
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return float(math.exp(ys[i] + slope * (x - xs[i])))


def elem_bytes(cfg) -> int:
    return 2 if cfg["precision"] == "fp16" else 4


# --------------------------------------------------------------------------- work items
def _chunk_max_sum(cost, packs, axis):
    """cost[..., g, ...] along `axis` (groups): groups packed `packs` at a time run side by side,
    so a pack takes as long as its slowest group; returns the per-pack costs (groups axis -> packs)."""
    g = cost.shape[axis]
    if packs <= 1:
        return cost
    nchunk = -(-g // packs)
    pad = nchunk * packs - g
    if pad:
        widths = [(0, 0)] * cost.ndim
        widths[axis] = (0, pad)
        cost = np.pad(cost, widths)
    shape = cost.shape[:axis] + (nchunk, packs) + cost.shape[axis + 1:]
    return cost.reshape(shape).max(axis=axis + 1)


def _packing(lanes_per_group: int, groups: int, cols: int):
    """(groups packed side by side, lanes available to each packed group)."""
    packs = max(1, min(groups, cols // max(lanes_per_group, 1)))
    return packs, cols // packs


def work_items(node, wshape, a_in, g_in, g_out, cols: int) -> Dict[str, dict]:
    """Per phase: row cycles of every work item, MACs and broadcast-operand reads.

    a_in: which input activations are non-zero (skipped when False);
    g_out: which errors d_l are non-zero / computed (broadcast in BP, lanes in WG);
    g_in: which BP outputs g_{l-1} are computed (all True = no output sparsity).
    """
    if node.op == "gemm":
        a, go, gi = a_in.astype(np.int64), g_out.astype(np.int64), g_in.astype(np.int64)
        fout = go.shape[1]
        na, ng, ngi = a.sum(1), go.sum(1), gi.sum(1)
        ceil = lambda v: -(-v // cols)   # noqa: E731
        return {
            "fp": {"cyc": na * ceil(fout), "macs": int(na.sum()) * fout, "bcast": int(na.sum())},
            "bp": {"cyc": ng * ceil(ngi), "macs": int((ng * ngi).sum()), "bcast": int(ng.sum())},
            "wg": {"cyc": (a * ceil(ng)[:, None]).sum(0), "macs": int((na * ng).sum()), "bcast": int(na.sum())},
        }
    k, cg, R, S = wshape
    g = node.attrs["group"]
    kg = k // g
    n, c, h, w = a_in.shape
    oh, ow = g_out.shape[2:]
    (sh, sw), (dh, dw), (pt, pl, _, _) = node.attrs["stride"], node.attrs["dilation"], node.attrs["pads"]
    A5 = a_in.reshape(n, g, cg, h, w)
    A = A5.sum(2, dtype=np.int64)
    Gi = g_in.reshape(n, g, cg, h, w).sum(2, dtype=np.int64)
    Go = g_out.reshape(n, g, kg, oh, ow).sum(2, dtype=np.int64)
    fp_b = np.zeros((n, g, oh, ow), np.int64)      # non-zero inputs in each output's receptive field
    bp_b = np.zeros((n, g, h, w), np.int64)        # non-zero errors reaching each input pixel
    fp_p, pf = _packing(kg, g, cols)
    bp_p, pb = _packing(cg, g, cols)
    go_cyc = -(-Go // pf)                           # WG: cycles per (pixel, group) for the error list
    wg_cyc = np.zeros((R, S, g, cg), np.int64)
    wg_macs = wg_bcast = 0
    for r in range(R):
        oh_ok, ih = _valid(oh, h, sh, dh, pt, r)
        for s in range(S):
            ow_ok, iw = _valid(ow, w, sw, dw, pl, s)
            if not len(oh_ok) or not len(ow_ok):
                continue
            oi, ii = np.ix_(oh_ok, ow_ok), np.ix_(ih, iw)
            fp_b[:, :, oi[0], oi[1]] += A[:, :, ii[0], ii[1]]
            bp_b[:, :, ii[0], ii[1]] += Go[:, :, oi[0], oi[1]]
            a_sel = A5[:, :, :, ii[0], ii[1]].astype(np.int64)
            wg_cyc[r, s] = np.einsum("ngchw,nghw->gc", a_sel, go_cyc[:, :, oi[0], oi[1]])
            wg_macs += int(np.einsum("ngchw,nghw->", a_sel, Go[:, :, oi[0], oi[1]]))
            wg_bcast += int(a_sel.sum())
    fp_cost = fp_b * -(-kg // pf)
    bp_cost = bp_b * -(-Gi // pb)
    fp_cyc = _chunk_max_sum(fp_cost, fp_p, 1).sum(1).ravel()
    bp_cyc = _chunk_max_sum(bp_cost, bp_p, 1).sum(1).ravel()
    wg_items = _chunk_max_sum(wg_cyc, fp_p, 2).ravel()
    return {
        "fp": {"cyc": fp_cyc, "macs": int(fp_b.sum()) * kg, "bcast": int(fp_b.sum())},
        "bp": {"cyc": bp_cyc, "macs": int((bp_b * Gi).sum()), "bcast": int(bp_b.sum())},
        "wg": {"cyc": wg_items, "macs": wg_macs, "bcast": wg_bcast},
    }


def _valid(o, size, stride, dil, pad, r):
    out = np.arange(o)
    pos = out * stride - pad + r * dil
    ok = (pos >= 0) & (pos < size)
    return out[ok], pos[ok]


def static_waves(cyc: np.ndarray, rows: int) -> int:
    """Items go to rows in their natural order, `rows` at a time; a wave lasts as long as its busiest row."""
    if cyc.size == 0:
        return 0
    pad = (-cyc.size) % rows
    c = np.concatenate([cyc, np.zeros(pad, cyc.dtype)]) if pad else cyc
    return int(c.reshape(-1, rows).max(1).sum())


def planned(cyc: np.ndarray, rows: int) -> int:
    """Work partition built from counts known in advance (longest-processing-time-first: items
    sorted by cost, each given to the least loaded row); each row runs its own queue and the
    phase lasts as long as the busiest row (Graham: at most 4/3 of optimal)."""
    import heapq

    if cyc.size == 0:
        return 0
    loads = [0] * rows
    for c in np.sort(cyc)[::-1].tolist():
        if c == 0:
            break
        heapq.heapreplace(loads, loads[0] + c)
    return int(max(loads))


# --------------------------------------------------------------------------- one step
def _producer_act(model, value):
    """The activation op whose zeros `value` carries (through flatten/reshape/maxpool), or None."""
    producers = {n.output: n for n in model.nodes}
    p = producers.get(value)
    while p is not None and p.op in ("flatten", "reshape", "maxpool"):
        p = producers.get(p.inputs[0])
    return p


def _stored_bytes(arr_nonzero: int, size: int, bits: int, eb: int) -> float:
    """Mask/state bits plus packed non-zeros, or dense if that were smaller."""
    return float(min(size * eb, size * bits / 8 + arr_nonzero * eb))


def simulate_step(model, vals, dvals, trainable, cfg) -> List[dict]:
    """Model one recorded training step: one row per Conv/Gemm layer with, per design and phase,
    macs, cycles, utilisation and energy parts (pJ)."""
    from .layer_stats import layer_masks, layer_table

    table = {r["name"]: r for r in layer_table(model, vals, dvals, trainable)}
    rows_, cols = cfg["pe_rows"], cfg["pe_cols"]
    pes = rows_ * cols
    eb = elem_bytes(cfg)
    mac_pj = sum(cfg["mac_energy_pj"][cfg["precision"]].values())
    cmp_pj = cfg["compare_energy_pj"]
    kb = cfg["buffer_kb"]
    e_buf = {b: sram_pj_per_64b(kb[b], cfg) / 8.0 for b in kb}           # pJ per byte
    e_dram = cfg["dram_energy_pj_per_64b"] / 8.0
    bw = cfg["dram_bytes_per_cycle"]
    fill = rows_ + cols
    producers = {n.output: n for n in model.nodes}
    bits_for = lambda op: cfg["mask_bits"].get(op, cfg["mask_bits"]["default"])  # noqa: E731
    out_rows = []
    for node in model.weight_layers():
        t = table[node.name]
        W = model.params[node.params["W"]]
        m = layer_masks(model, node, vals, dvals, producers)
        act, x, z, a_out, d = m["act"], m["x"], m["z"], m["a"], m["d"]
        a_in, g_in, g_out, prev = m["a_in"], m["g_in"], m["g_out"], m["prev"]
        ones_in, ones_out = np.ones(x.shape, bool), np.ones(z.shape, bool)
        d_nz = d != 0
        need = {"fp": True, "bp": t["macs_dense"]["bp"] > 0, "wg": t["macs_dense"]["wg"] > 0}
        items = {
            "dense": work_items(node, W.shape, ones_in, ones_in, ones_out, cols),
            "runtime-detect": work_items(node, W.shape, a_in, ones_in, d_nz, cols),
            "constraint": work_items(node, W.shape, a_in, g_in, g_out, cols),
        }
        for ph in PHASES:   # the constraint design's MACs ARE layer_table's required MACs
            if need[ph]:
                for des, key in (("constraint", "macs_required"), ("dense", "macs_dense")):
                    if items[des][ph]["macs"] != t[key][ph]:
                        raise AssertionError(f"{node.name} {ph}: work partition of {des} has "
                                             f"{items[des][ph]['macs']} MACs, layer_table {t[key][ph]}")
        # stored forms and DRAM bytes
        in_act = _producer_act(model, node.inputs[0])
        in_bits = bits_for(in_act.op if in_act is not None else "default")
        x_dense, z_dense = x.size * eb, z.size * eb
        x_stored = _stored_bytes(int(a_in.sum()), x.size, in_bits, eb)
        out_stored = (_stored_bytes(int((a_out != 0).sum()), a_out.size, bits_for(act.op), eb)
                      if act is not None and act.op in ("relu", "clip", "hardswish") else z_dense)
        w_bytes = W.size * eb
        d_stored = int(g_out.sum()) * eb        # values at G positions; the mask is already known
        g_in_bits = x.size * in_bits / 8 if prev is not None and prev.op in ("relu", "clip", "hardswish") else 0
        g_in_write = int(g_in.sum()) * eb
        dram = {
            "dense": {"fp": (w_bytes + x_dense, z_dense), "bp": (w_bytes + z_dense + x_dense, x_dense),
                      "wg": (z_dense + x_dense, w_bytes)},
            "constraint": {"fp": (w_bytes + x_stored, out_stored),
                           "bp": (w_bytes + d_stored + g_in_bits, g_in_write),
                           "wg": (d_stored + x_stored, w_bytes)},
        }
        dram["runtime-detect"] = dram["dense"]
        # which buffer holds the broadcast operand, the lane operand and the output, per phase
        bufs = {"fp": ("activation", "weight", "activation"), "bp": ("error", "weight", "error"),
                "wg": ("activation", "error", "weight")}
        lane_footprint = {"dense": {"fp": w_bytes, "bp": w_bytes, "wg": z_dense},
                          "runtime-detect": {"fp": w_bytes, "bp": w_bytes, "wg": z_dense},
                          "constraint": {"fp": w_bytes, "bp": w_bytes, "wg": d_stored}}
        out_write = {"dense": {"fp": z_dense, "bp": x_dense, "wg": w_bytes},
                     "runtime-detect": {"fp": z_dense, "bp": x_dense, "wg": w_bytes},
                     "constraint": {"fp": out_stored, "bp": g_in_write, "wg": w_bytes}}
        # runtime detection: operands scanned and non-zeros indexed per phase
        scan = {"fp": (x.size, int(a_in.sum()), ("activation",)),
                "bp": (z.size, int(d_nz.sum()), ("error",)),
                "wg": (x.size + z.size, int(a_in.sum()) + int(d_nz.sum()), ("activation", "error"))}
        est_cycles = math.ceil(z.size / cfg["estimator_lanes"])
        rec = {"name": node.name, "op": node.op, "activation": t["activation"],
               "input_sparsity": t["input_sparsity"], "act_sparsity": t["act_sparsity"],
               "grad_sparsity": t["grad_sparsity"], "designs": {}}
        for des in DESIGNS:
            per = {}
            for ph in PHASES:
                if not need[ph]:
                    per[ph] = _empty()
                    continue
                it = items[des][ph]
                cyc_items = it["cyc"]
                if des == "constraint":
                    compute = planned(cyc_items, rows_)
                else:
                    compute = static_waves(cyc_items, rows_)
                compute += fill
                extra = {"detect_cycles": 0, "index_cycles": 0, "estimator_exposed_cycles": 0,
                         "imbalance_cycles": compute - fill - math.ceil(int(cyc_items.sum()) / rows_)}
                e_other = 0.0
                buf_bytes_extra = 0.0
                if des == "runtime-detect":
                    n_scan, n_nz, sbufs = scan[ph]
                    det = math.ceil(n_scan / cfg["detect_elems_per_cycle"])
                    idx = math.ceil(n_nz / cfg["index_elems_per_cycle"])
                    extra["detect_cycles"], extra["index_cycles"] = det, idx
                    compute += int(round((1 - cfg["detect_overlap"]) * (det + idx)))
                    e_other += n_scan * cmp_pj
                    idx_bytes = n_nz * cfg["index_bits"] / 8
                    buf_e_extra = (n_scan * eb * e_buf[sbufs[0]] if len(sbufs) == 1 else
                                   x.size * eb * e_buf["activation"] + z.size * eb * e_buf["error"])
                    buf_e_extra += 2 * idx_bytes * e_buf[sbufs[0]]          # index list write + read
                    buf_bytes_extra = n_scan * eb + 2 * idx_bytes
                else:
                    buf_e_extra = 0.0
                if des == "constraint" and ph == "fp":
                    exposed = max(0, est_cycles - compute)
                    extra["estimator_exposed_cycles"] = exposed
                    compute += exposed
                    e_other += z.size * cmp_pj                                  # estimator classifies z
                rd, wr = dram[des][ph]
                dram_cycles = math.ceil((rd + wr) / bw)
                cycles = max(compute, dram_cycles)
                b_bc, b_lane, b_out = bufs[ph]
                buf_e = (it["bcast"] * eb * e_buf[b_bc]                       # broadcast operand reads
                         + lane_footprint[des][ph] * e_buf[b_lane]              # lane operand into scratchpads
                         + it["macs"] * eb * e_buf["pe_scratchpad"]             # lane operand per MAC
                         + out_write[des][ph] * e_buf[b_out]                    # results
                         + (rd + wr) * _dram_side_buf(ph, e_buf)                # DRAM data passes a buffer once
                         + buf_e_extra)
                e_other += cfg["static_power_w"] * cycles / (cfg["clock_mhz"] * 1e6) * 1e12
                energy = {"mac": it["macs"] * mac_pj, "buffer": buf_e, "dram": (rd + wr) * e_dram,
                          "other": e_other}
                energy["total"] = sum(energy.values())
                per[ph] = {"macs": it["macs"], "cycles": int(cycles), "compute_cycles": int(compute),
                           "dram_cycles": int(dram_cycles), "utilisation": it["macs"] / (cycles * pes),
                           "dram_bytes": float(rd + wr),
                           "buffer_bytes": float(it["bcast"] * eb + lane_footprint[des][ph] + out_write[des][ph]
                                                 + rd + wr + buf_bytes_extra),
                           "energy_pj": energy, **extra}
            rec["designs"][des] = per
        out_rows.append(rec)
    return out_rows


def _dram_side_buf(ph, e_buf):
    """Average buffer energy per byte for DRAM traffic (it lands in / leaves the phase's buffers)."""
    return {"fp": e_buf["activation"], "bp": e_buf["error"], "wg": e_buf["activation"]}[ph]


def _empty():
    return {"macs": 0, "cycles": 0, "compute_cycles": 0, "dram_cycles": 0, "utilisation": 0.0,
            "dram_bytes": 0.0, "buffer_bytes": 0.0, "detect_cycles": 0, "index_cycles": 0,
            "estimator_exposed_cycles": 0, "imbalance_cycles": 0,
            "energy_pj": {p: 0.0 for p in PARTS + ("total",)}}


def summarise(layers: List[dict], cfg) -> dict:
    """Totals per design and phase, plus ratios against dense and runtime-detect."""
    out = {}
    for des in DESIGNS:
        ph_tot = {}
        for ph in PHASES + ("total",):
            phs = PHASES if ph == "total" else (ph,)
            recs = [l["designs"][des][p] for l in layers for p in phs]
            macs = sum(r["macs"] for r in recs)
            cyc = sum(r["cycles"] for r in recs)
            en = {p: sum(r["energy_pj"][p] for r in recs) for p in PARTS}
            en["total"] = sum(en.values())
            ph_tot[ph] = {"macs": macs, "cycles": cyc,
                          "seconds": cyc / (cfg["clock_mhz"] * 1e6),
                          "utilisation": macs / (cyc * cfg["pe_rows"] * cfg["pe_cols"]) if cyc else 0.0,
                          "energy_pj": en,
                          "dram_bytes": sum(r["dram_bytes"] for r in recs)}
        out[des] = ph_tot
    for des in DESIGNS:
        for ph in PHASES + ("total",):
            r = out[des][ph]
            r["ratios"] = {}
            for ref in ("dense", "runtime-detect"):
                o = out[ref][ph]
                r["ratios"][f"speedup_vs_{ref}"] = o["cycles"] / r["cycles"] if r["cycles"] else None
                r["ratios"][f"energy_eff_vs_{ref}"] = (o["energy_pj"]["total"] / r["energy_pj"]["total"]
                                                       if r["energy_pj"]["total"] else None)
    return out


# --------------------------------------------------------------------------- running
def record_steps(model_name: str, batch_size: int, data: Optional[str], cfg: dict):
    """Run warm-up SGD steps, then yield (model, vals, dvals, trainable, x, y, params) for the measured steps."""
    from edgetune import models as bundled
    from .data import load_data, validate
    from .engines.dense import DenseEngine
    from .onnx_import import load_model
    from .optim import OptimizerConfig

    model = load_model(model_name)
    if data is None:
        data = bundled.model_info(model_name).get("default_data") if bundled.is_bundled_model(model_name) else None
        if data is None:
            raise UsageError(f"--data is required for {model_name} (it is not a bundled model)")
    ds = load_data(data, model.input_shape, seed=cfg["seed"])
    validate(ds, model.input_shape)
    trainable = model.trainable_names()
    eng = DenseEngine()
    eng.load(model, trainable, optimizer=OptimizerConfig(name="sgd", lr=cfg["lr"]))
    order = np.random.default_rng(cfg["seed"]).permutation(len(ds.x))
    need = (cfg["warmup_steps"] + cfg["measure_steps"]) * batch_size
    idx = np.resize(order, max(need, 1))
    steps = []
    for s in range(cfg["warmup_steps"] + cfg["measure_steps"]):
        b = idx[s * batch_size:(s + 1) * batch_size]
        xb, yb = ds.x[b], ds.y[b]
        if s >= cfg["warmup_steps"]:
            params = eng.get_params()
            _, _, vals, dvals = eng.forward_backward_values(xb, yb)
            steps.append((vals, dvals, xb, yb, params))
        eng.train_step(xb, yb)
    return model, trainable, data, steps


def simulate_model(model_name: str, batch_size: int, data: Optional[str], cfg: dict) -> dict:
    model, trainable, data, steps = record_steps(model_name, batch_size, data, cfg)
    layers = None
    for vals, dvals, *_ in steps:
        rows = simulate_step(model, vals, dvals, trainable, cfg)
        layers = rows if layers is None else _add_layers(layers, rows, cfg["pe_rows"] * cfg["pe_cols"])
    return {"model": model_name, "data": data, "batch_size": batch_size, "steps": len(steps),
            "layers": layers, "totals": summarise(layers, cfg)}


def _add_layers(acc, rows, pes):
    for a, b in zip(acc, rows):
        for des in DESIGNS:
            for ph in PHASES:
                x, y = a["designs"][des][ph], b["designs"][des][ph]
                for k, v in y.items():
                    if k == "energy_pj":
                        for p in v:
                            x[k][p] += v[p]
                    elif k != "utilisation":
                        x[k] += v
                x["utilisation"] = x["macs"] / (x["cycles"] * pes) if x["cycles"] else 0.0
    return acc


def simulate_main(models: List[str], batch_size: int = 32, data: Optional[str] = None,
                  config: Optional[str] = None, json_out: Optional[str] = None, echo=print) -> dict:
    """`edgetune simulate`: model the three designs on real masks; print tables, optionally write JSON."""
    if batch_size is None or batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if json_out:
        folder = os.path.dirname(os.path.abspath(json_out)) or "."
        if os.path.isdir(json_out):
            raise UsageError(f"--json {json_out}: is a folder; give a file path")
        if not os.path.isdir(folder):
            raise UsageError(f"--json {json_out}: folder {folder} does not exist")
    cfg = load_config(config)
    models = list(models) or list(BENCH_MODELS)
    results = [simulate_model(m, batch_size, data, cfg) for m in models]
    for res in results:
        echo(format_model(res))
    echo(format_paper_table(results))
    out = {"config": cfg, "config_file": config or DEFAULT_CONFIG, "models": results,
           "paper": {"energy_eff_vs_dense": PAPER["vs_dense"],
                     "energy_eff_vs_runtime_detect": list(PAPER["vs_runtime_detect"])}}
    if json_out:
        from .atomic import atomic_write

        with atomic_write(json_out, "w") as f:
            json.dump(out, f, indent=2, default=_jsonable)
            f.write("\n")
    return out


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(type(o))


# --------------------------------------------------------------------------- printing
def format_model(res: dict) -> str:
    tot = res["totals"]
    lines = [f"\n{res['model']} on {res['data']} (batch {res['batch_size']}, {res['steps']} measured step(s))",
             f"{'design':<15}{'phase':<6}{'MACs':>13}{'cycles':>12}{'util':>7}"
             f"{'E mac uJ':>10}{'E buf uJ':>10}{'E dram uJ':>10}{'E oth uJ':>9}{'E tot uJ':>10}"
             f"{'spd/dn':>8}{'eff/dn':>8}{'spd/rd':>8}{'eff/rd':>8}"]
    for des in DESIGNS:
        for ph in PHASES + ("total",):
            r = tot[des][ph]
            e = r["energy_pj"]
            q = r["ratios"]
            f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"{des:<15}{ph:<6}{r['macs']:>13,}{r['cycles']:>12,}{r['utilisation']:>7.2f}"
                         f"{e['mac'] / 1e6:>10.2f}{e['buffer'] / 1e6:>10.2f}{e['dram'] / 1e6:>10.2f}"
                         f"{e['other'] / 1e6:>9.2f}{e['total'] / 1e6:>10.2f}"
                         f"{f(q['speedup_vs_dense']):>8}{f(q['energy_eff_vs_dense']):>8}"
                         f"{f(q['speedup_vs_runtime-detect']):>8}{f(q['energy_eff_vs_runtime-detect']):>8}")
    return "\n".join(lines)


def format_paper_table(results: List[dict]) -> str:
    lines = ["\nconstraint design, whole training step (markdown):", "",
             "| model | input sparsity (mean) | energy eff. vs dense | energy eff. vs runtime-detect "
             "| speedup vs dense | speedup vs runtime-detect |",
             "|---|---|---|---|---|---|",
             f"| paper (its FPGA, its models) | - | {PAPER['vs_dense']}x | "
             f"{PAPER['vs_runtime_detect'][0]}x / {PAPER['vs_runtime_detect'][1]}x | - | - |"]
    for res in results:
        q = res["totals"]["constraint"]["total"]["ratios"]
        sp = np.mean([l["input_sparsity"] for l in res["layers"]])
        lines.append(f"| {res['model']} | {sp:.2f} | {q['energy_eff_vs_dense']:.2f}x | "
                     f"{q['energy_eff_vs_runtime-detect']:.2f}x | {q['speedup_vs_dense']:.2f}x | "
                     f"{q['speedup_vs_runtime-detect']:.2f}x |")
    return "\n".join(lines)
