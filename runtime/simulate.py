"""`edgetune simulate`: dense vs runtime-detect vs constraint accelerators on real training masks.

It runs real training steps with the dense reference, records the values and gradients of the
measured step(s), and costs every Conv/Gemm layer on the three designs of runtime/accel/cost.py
(the same PE array, buffers, clock and DRAM port: runtime/accel/spec.json). docs/SIMULATION.md
describes the model, its parameters and its results.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from .accel.cost import DESIGNS, PARTS, PHASES, Operands, layer_costs
from .accel.dataflow import planned, static_waves, work_items  # noqa: F401  (part of this module's API)
from .accel.spec import SPEC_FILE, check_spec, elem_bytes, read_entries, sram_pj_per_64b  # noqa: F401
from .errors import UsageError
from .jsonfile import read_json, write_json

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sim_config.json")
BENCH_MODELS = ("bench_vgg_relu", "bench_resnet_relu", "bench_mobilenet_relu6", "bench_cnn_hardswish")
PAPER = {"vs_dense": 2.2, "vs_runtime_detect": (1.38, 1.46)}


# --------------------------------------------------------------------------- config
def load_config(path: Optional[str] = None) -> dict:
    """The accelerator spec plus the study's parameters (sim_config.json), overridden by the
    user's file; returns {key: value}."""
    cfg = {**read_entries(SPEC_FILE), **read_entries(DEFAULT_CONFIG)}
    if path is None:
        return cfg
    for k, v in _read_user_config(path).items():
        if k not in cfg:
            why = (" (the stored forms come from the constraint table, runtime/constraints.py)"
                   if k == "mask_bits" else f" (known: {', '.join(sorted(cfg))})")
            raise UsageError(f"--config {path}: unknown parameter {k!r}{why}")
        v = v["value"] if isinstance(v, dict) and "value" in v else v
        cfg[k] = {**cfg[k], **v} if isinstance(cfg[k], dict) and isinstance(v, dict) else v
    _check_config(cfg, path)
    return cfg


def _read_user_config(path: str) -> dict:
    user = read_json(path, f"--config {path}", "file", UsageError)
    if not isinstance(user, dict):
        raise UsageError(f"--config {path}: expected a JSON object of parameters")
    return {k: v for k, v in user.items() if not k.startswith("_")}


def _check_config(cfg: dict, where) -> None:
    def bad(msg):
        raise UsageError(f"--config {where}: {msg}")

    check_spec(cfg, bad)
    for k in ("detect_elems_per_cycle", "index_elems_per_cycle", "index_bits", "measure_steps"):
        if not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 1:
            bad(f"{k} must be a whole number >= 1, got {cfg[k]!r}")
    if not isinstance(cfg["warmup_steps"], int) or cfg["warmup_steps"] < 0:
        bad(f"warmup_steps must be a whole number >= 0, got {cfg['warmup_steps']!r}")
    if not isinstance(cfg["lr"], (int, float)) or cfg["lr"] <= 0:
        bad(f"lr must be a positive number, got {cfg['lr']!r}")
    if not isinstance(cfg["detect_overlap"], (int, float)) or not 0 <= cfg["detect_overlap"] <= 1:
        bad("detect_overlap must be between 0 and 1")


# --------------------------------------------------------------------------- one step
def simulate_step(model, vals, dvals, trainable, cfg) -> List[dict]:
    """Model one recorded training step: one row per Conv/Gemm layer with, per design and phase,
    macs, cycles, utilisation and energy parts (pJ)."""
    from .layer_stats import layer_table

    out = []
    for t, node in zip(layer_table(model, vals, dvals, trainable), model.weight_layers()):
        need = {"fp": True, "bp": t["macs_dense"]["bp"] > 0, "wg": t["macs_dense"]["wg"] > 0}
        ops = Operands.from_values(model, node, vals, dvals)
        designs = layer_costs(node, model.params[node.params["W"]].shape, ops, need, cfg)
        _check_macs(node.name, designs, t, need)
        out.append({"name": node.name, "op": node.op, "activation": t["activation"],
                    "input_sparsity": t["input_sparsity"], "act_sparsity": t["act_sparsity"],
                    "grad_sparsity": t["grad_sparsity"], "designs": designs})
    return out


def _check_macs(name, designs, row, need):
    """The constraint design's MACs ARE layer_table's required MACs, the dense design's its dense ones."""
    for ph in PHASES:
        for des, key in (("constraint", "macs_required"), ("dense", "macs_dense")):
            if need[ph] and designs[des][ph]["macs"] != row[key][ph]:
                raise AssertionError(f"{name} {ph}: work partition of {des} has {designs[des][ph]['macs']} "
                                     f"MACs, layer_table {row[key][ph]}")


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
        write_json(json_out, out)
    return out


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
