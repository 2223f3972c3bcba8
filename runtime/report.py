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
    from its own counters, for its last training step."""
    xb, yb = ds.x_val[:cfg.batch_size], ds.y_val[:cfg.batch_size]
    rows = measure_layers(model, params, trainable, xb, yb, cfg.loss)
    dense, required = _sum_phases(rows, "macs_dense"), _sum_phases(rows, "macs_required")
    executed, source, batch = dict(dense), "the dense engine executes every MAC", int(len(xb))
    counters = engine.measure_step(xb, yb) or {}
    if counters.get("macs_executed"):
        executed = counters["macs_executed"]
        source = counters.get("source", f"{engine.name} engine counters")
    if counters.get("scope") == "last_step":   # a device's own counts of its last step, never the dense count
        dense, required = counters["macs_dense"], counters["macs_required"]
        batch = counters.get("batch") or batch
    per_layer = {r["name"]: r for r in counters.get("layers", [])}
    for r in rows:
        got = per_layer.get(r["name"])
        r["macs_executed"] = ({ph: int(got[ph]["executed"]) for ph in ("fp", "bp", "wg")} if got
                              else dict(r["macs_dense"]) if not counters else None)
    act_bytes = counters.get("activation_bytes") or _dense_activation_bytes(rows, model, xb, params)
    report = {
        "model": cfg.model, "data": cfg.data, "engine": engine.name,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "engine_options"},
        "trainable": list(trainable),
        "before": state["before"], "after": after,
        "history": state["history"],
        "layers": [dict({k: r[k] for k in ("name", "op", "activation", "rule", "act_sparsity", "input_sparsity",
                                           "grad_sparsity", "macs_dense", "macs_required", "macs_executed",
                                           "act_bytes")}, **_zero_columns(per_layer.get(r["name"])))
                   for r in rows],
        "macs": {"batch": batch, "dense": dense["total"], "required": required["total"],
                 "executed": executed["total"], "executed_source": source,
                 "per_phase": {"dense": dense, "required": required, "executed": executed}},
        "phase_seconds": state["phase_seconds"],
        "steps": int(state.get("steps_done", 0)),
        "activation_bytes": act_bytes,
        "export": export,
    }
    extra = engine.counters()
    for key in ("link", "device", "threads"):
        if key in extra:
            report[key] = extra[key]
    return report


def _zero_columns(counted) -> dict:
    """The zero structure of a layer's output as the engine measured it (the native kernels'
    epilogue): shares of all-zero pixels and of all-zero channel blocks (block = the vector
    width). Empty for engines that do not measure it."""
    z = (counted or {}).get("zero")
    if not z or not z.get("measured"):
        return {}
    return {"zero_pixels": z["zero_pixels"], "zero_blocks": z["zero_blocks"], "block_channels": z["block_channels"]}


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
    write_json(path, report)


REQUIRED_KEYS = ("model", "engine", "before", "after", "history", "layers", "macs")


def read_report(path: str) -> dict:
    """Load a report JSON written by `finetune --report`, with a clear error for anything else."""
    from .errors import DataError

    rep = read_json(path, path, "report", DataError)
    missing = [k for k in REQUIRED_KEYS if not isinstance(rep, dict) or k not in rep]
    if missing:
        raise DataError(f"{path}: not an edgetune finetune report (missing {', '.join(missing)})")
    return rep
