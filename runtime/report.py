"""The fine-tuning report (DESIGN §4): accuracy, history, per-layer sparsity, MACs, bytes, timing."""
from __future__ import annotations

import json

import numpy as np

from .atomic import atomic_write


def measure_layers(model, params, trainable, x, y, loss):
    """Per-layer sparsity and MAC counts on one batch, from the dense reference."""
    from .engines.dense import DenseEngine
    from .layer_stats import layer_table

    ref = DenseEngine()
    ref.load(model, trainable, loss=loss)
    ref.set_params(params)
    _, _, vals, dvals = ref.forward_backward_values(x, y)
    return layer_table(model, vals, dvals, trainable)


def _sum_phases(rows, key):
    out = {p: sum(r[key][p] for r in rows) for p in ("fp", "bp", "wg")}
    out["total"] = sum(out.values())
    return out


def build_report(cfg, model, ds, engine, trainable, params, state, after, export) -> dict:
    """Assemble the report dict from a finished run."""
    xb, yb = ds.x_val[:cfg.batch_size], ds.y_val[:cfg.batch_size]
    rows = measure_layers(model, params, trainable, xb, yb, cfg.loss)
    dense, required = _sum_phases(rows, "macs_dense"), _sum_phases(rows, "macs_required")
    executed = dict(dense)
    counters = {}
    if hasattr(engine, "measure_step"):
        counters = engine.measure_step(xb, yb)
        executed = counters.get("macs_executed", executed)
    act_bytes = counters.get("activation_bytes") or _dense_activation_bytes(rows, model, xb, params)
    report = {
        "model": cfg.model, "data": cfg.data, "engine": engine.name,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "engine_options"},
        "trainable": list(trainable),
        "before": state["before"], "after": after,
        "history": state["history"],
        "layers": [{k: r[k] for k in ("name", "op", "activation", "rule", "act_sparsity", "input_sparsity",
                                      "grad_sparsity", "macs_dense", "macs_required")} for r in rows],
        "macs": {"batch": int(len(xb)), "dense": dense["total"], "required": required["total"],
                 "executed": executed["total"], "per_phase": {"dense": dense, "required": required,
                                                              "executed": executed}},
        "phase_seconds": state["phase_seconds"],
        "activation_bytes": act_bytes,
        "export": export,
    }
    extra = engine.counters()
    for key in ("link", "device"):
        if key in extra:
            report[key] = extra[key]
    return report


def _dense_activation_bytes(rows, model, xb, params):
    """What a dense engine keeps for backward: every layer's output activation in fp32."""
    from .engines.dense import DenseEngine

    probe = DenseEngine()
    probe.load(model, [])
    probe.set_params(params)
    vals = probe.forward_values(xb)
    total = 0
    for node in model.weight_layers():
        act = model.activation_after(node)
        total += vals[(act or node).output].nbytes
    return {"dense": int(total), "stored": int(total)}


def write_report(path: str, report: dict) -> None:
    """Write the report JSON atomically."""
    with atomic_write(path, "w") as f:
        json.dump(report, f, indent=2, default=_jsonable)
        f.write("\n")


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
