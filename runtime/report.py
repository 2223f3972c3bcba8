"""The fine-tuning report (its keys: docs/ARCHITECTURE.md, "The report"): accuracy, history,
per-layer sparsity, MACs, bytes, timing."""
from __future__ import annotations

from .jsonfile import read_json, write_json


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
    """Assemble the report dict from a finished run.

    MACs are measured on one validation batch: `dense` and `required` (the constraints'
    minimum) by the dense reference, `executed` by the engine that trained (the native
    kernels' own counters); the dense engine executes every MAC. A device reports all three
    from its own counters, for its last training step. Activation bytes (`dense`, and `stored`
    = `values` + `plan`) are what the engine that trained kept for backward on that batch (the
    dense engine keeps every activation dense); docs/ARCHITECTURE.md, "The report"."""
    xb, yb = ds.x_val[:cfg.batch_size], ds.y_val[:cfg.batch_size]
    rows = measure_layers(model, params, trainable, xb, yb, cfg.loss)
    dense, required = _sum_phases(rows, "macs_dense"), _sum_phases(rows, "macs_required")
    executed, source, batch = dict(dense), "the dense engine executes every MAC", int(len(xb))
    counters = engine.measure_step(xb, yb) or {}
    if counters.get("macs_executed"):
        executed = counters["macs_executed"]
        source = counters.get("source", f"{engine.name} engine counters")
    device_step = counters.get("scope") == "last_step"   # a device's own counts of its last step
    if device_step:
        dense, required = counters["macs_dense"], counters["macs_required"]
        batch = counters.get("batch") or batch
    _engine_layer_counts(rows, counters, device_step)
    act_bytes = counters.get("activation_bytes") if counters else _dense_activation_bytes(rows)
    report = {
        "model": cfg.model, "data": cfg.data, "engine": engine.name,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "engine_options"},
        "trainable": list(trainable),
        "before": state["before"], "after": after,
        "history": state["history"],
        "layers": [{k: r[k] for k in ("name", "op", "activation", "rule", "act_sparsity", "input_sparsity",
                                      "grad_sparsity", "macs_dense", "macs_required", "macs_executed",
                                      "act_bytes")} for r in rows],
        "macs": {"batch": batch, "dense": dense["total"], "required": required["total"],
                 "executed": executed["total"], "executed_source": source,
                 "per_phase": {"dense": dense, "required": required, "executed": executed}},
        "phase_seconds": state["phase_seconds"],
        "steps": int(state.get("steps_done", 0)),
        "step_time": step_time(state, engine.name),
        "activation_bytes": act_bytes,
        "export": export,
    }
    extra = engine.counters()
    for key in ("link", "device", "threads"):
        if key in extra:
            report[key] = extra[key]
    return report


def _engine_layer_counts(rows, counters, device_step) -> None:
    """Put the engine's own per-layer counts into the reference rows: executed MACs (a device's
    dense and required too, so a row is one step's), and the activation bytes it kept. Without
    counters the engine is the dense one: every MAC executed, every activation kept dense."""
    per_layer = {r["name"]: r for r in counters.get("layers", [])}
    for r in rows:
        got = per_layer.get(r["name"])
        dense_bytes = r["act_bytes"]["dense"]
        if not counters:
            r["macs_executed"] = dict(r["macs_dense"])
            r["act_bytes"] = {"dense": dense_bytes, "stored": dense_bytes, "values": dense_bytes, "plan": 0}
            continue
        r["macs_executed"] = {ph: int(got[ph]["executed"]) for ph in ("fp", "bp", "wg")} if got else None
        if got and device_step:
            for kind in ("dense", "required"):
                r[f"macs_{kind}"] = {ph: int(got[ph][kind]) for ph in ("fp", "bp", "wg")}
        r["act_bytes"] = dict(got["act_bytes"]) if got and got.get("act_bytes") else None


def step_time(state: dict, engine: str) -> dict:
    """Time per training step. `wall_ms`: the trainer's clock around each step, everything included
    (a device's link transfers too); `phase_ms`: where the engine says the step went (for a
    device, its own compute); `link_share` (device engine): the part of the wall time outside the
    device's compute, i.e. the link and the host's encoding, 0..1."""
    wall = state.get("step_wall") or {}
    n, seconds = int(wall.get("steps", 0)), float(wall.get("seconds", 0.0))
    steps = int(state.get("steps_done", 0)) or n
    out = {"steps": n, "wall_seconds": seconds, "wall_ms": 1e3 * seconds / n if n else None,
           "phase_ms": {k: 1e3 * v / steps for k, v in state["phase_seconds"].items()} if steps else {}}
    if engine == "device" and out["wall_ms"]:
        inside = sum(out["phase_ms"].values())
        out["link_share"] = max(0.0, 1.0 - inside / out["wall_ms"])
    return out


def _dense_activation_bytes(rows):
    """What a dense engine keeps for backward: every layer's output activation in fp32."""
    total = sum(r["act_bytes"]["dense"] for r in rows if r["act_bytes"])
    return {"dense": int(total), "stored": int(total), "values": int(total), "plan": 0}


def write_report(path: str, report: dict) -> None:
    """Write the report JSON atomically."""
    write_json(path, report)


REQUIRED_KEYS = ("model", "engine", "before", "after", "history", "layers", "macs")
FLEET_KEYS = ("model", "settings", "before", "after", "rounds")     # `edgetune fleet simulate --report`


def is_fleet_report(rep: dict) -> bool:
    """True for the report of a fleet run (docs/FLEET.md), False for a finetune report."""
    return "rounds" in rep and "history" not in rep


def read_report(path: str) -> dict:
    """Load a report JSON written by `finetune --report` or `fleet simulate --report`, with a clear
    error for anything else."""
    from .errors import DataError

    rep = read_json(path, path, "report", DataError)
    if not isinstance(rep, dict):
        raise DataError(f"{path}: not an edgetune report (a JSON {type(rep).__name__}, not an object)")
    keys = FLEET_KEYS if is_fleet_report(rep) else REQUIRED_KEYS
    missing = [k for k in keys if k not in rep]
    if missing:
        kind = "fleet report" if keys is FLEET_KEYS else "report of finetune --report or fleet simulate --report"
        raise DataError(f"{path}: not an edgetune {kind} (missing {', '.join(missing)})")
    return rep
