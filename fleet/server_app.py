"""edgetune's Flower ServerApp: runs the rounds, evaluates the global model after each one on
the server's validation data, exports the final model as ONNX (checked with onnxruntime) and
writes the report. The work is in task.py and strategy.py.

A run with a failed node still finishes its rounds with the other nodes and writes its
outputs, then fails (unless `allow-client-failures`), so `flwr ls` shows it as failed with
the node's reason: never a silent success.
"""
from __future__ import annotations

import logging
import time

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from . import FleetError
from . import report as fleet_report
from .packing import tensor_bytes
from .strategy import build_strategy
from .task import RunSettings, Server, check_writable

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured rounds and write the outputs."""
    t0 = time.time()
    settings = RunSettings.from_run_config(context.run_config)
    check_writable(settings.out, "out")          # before the rounds, not after them
    check_writable(settings.report, "report")
    server = Server(settings)
    initial = server.initial()
    latest = {"tensors": initial}

    def on_round(entry: dict) -> None:
        log(logging.INFO, "edgetune %s", fleet_report.round_line(entry, settings.rounds))
        if settings.progress:
            fleet_report.append_progress(settings.progress, entry)

    strategy = build_strategy(settings, on_round)
    before = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        tensors = {k: v.numpy() for k, v in arrays.items()}
        latest["tensors"] = tensors
        acc, loss = server.evaluate(tensors)
        if server_round == 0:
            before.update(val_acc=acc, val_loss=loss)
            on_round({"round": 0, **before})
        strategy.central_result(server_round, acc, loss)
        return MetricRecord({"val-acc": acc, "val-loss": loss})

    strategy.start(grid, ArrayRecord({k: Array(v) for k, v in initial.items()}), num_rounds=settings.rounds,
                   timeout=settings.round_timeout, train_config=ConfigRecord({"local-epochs": settings.local_epochs}),
                   evaluate_fn=evaluate)
    export = server.export(latest["tensors"], settings.out) if settings.out else None
    rounds = [strategy.rounds[r] for r in sorted(strategy.rounds)]
    doc = fleet_report.build(settings, server.names, tensor_bytes(initial), before, rounds, export, time.time() - t0)
    if settings.report:
        fleet_report.write(settings.report, doc)
    if doc["failures"] and not settings.allow_client_failures:
        raise FleetError(f"{len(doc['failures'])} node failure(s): "
                         + "; ".join(f"round {f['round']} {f['phase']}: {f['reason']}" for f in doc["failures"]))
