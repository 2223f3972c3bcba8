"""`edgetune fleet simulate`: a whole fleet on this machine, on Flower's simulation engine.

It starts a SuperLink in simulation mode on loopback (not the deprecated `run_simulation`),
with its own temporary Flower home, submits the app with `flwr run`, prints each round as
the server reports it, and judges the run by its final status: `flwr run` itself returns
before the run ends (and `--stream` exits 0 even when the run failed). Every process is
stopped by PID at the end, whatever happened.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from typing import Callable, Optional

from edgetune.runtime.errors import UsageError

from . import FleetError, require_flower
from .report import round_line
from .task import RunSettings, check_writable, preflight, resolve_paths

# How many simulated nodes Ray runs at once: one CPU each (the host's cores are shared).
CPUS_PER_NODE = 1


def simulate(settings: RunSettings, clients: int, log: Callable[[str], None] = print,
             timeout: float = 1800.0) -> dict:
    """Run `settings` on `clients` simulated nodes; return the server's report.

    Raises FleetError when the run fails, when any node failed (unless
    `settings.allow_client_failures`), or when a process outlives the run.
    """
    require_flower()
    if clients < 1:
        raise UsageError(f"--clients must be at least 1, got {clients}")
    settings.min_nodes = clients
    resolve_paths(settings.checked())
    check_writable(settings.out, "--out")
    check_writable(settings.report, "--report")
    preflight(settings, clients)
    # a short path: Ray's unix sockets live below it and must stay under the OS's path limit
    with tempfile.TemporaryDirectory(prefix="etfleet-") as home, _terminate_as_interrupt():
        return _simulate(settings, clients, log, timeout, home)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM ends the command like Ctrl-C does, so the fleet's processes are still stopped."""
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:          # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _simulate(settings: RunSettings, clients: int, log, timeout: float, home: str) -> dict:
    from .app_config import write_app
    from .processes import Fleet

    app_dir = os.path.join(home, "app")
    report_path = settings.report or os.path.join(home, "report.json")
    progress = os.path.join(home, "progress.jsonl")
    run_settings = RunSettings(**{**settings.__dict__, "report": os.path.abspath(report_path),
                                  "progress": progress})
    write_app(app_dir, run_settings, overwrite=True)
    printed = {"lines": 0}

    def show_progress():
        if not os.path.exists(progress):
            return
        with open(progress) as f:
            lines = f.read().split("\n")[:-1]     # whole lines only
        for line in lines[printed["lines"]:]:
            log(round_line(json.loads(line), settings.rounds))
        printed["lines"] = len(lines)

    fleet = Fleet(os.path.join(home, "flwr"), simulation=True)
    try:
        port = fleet.superlink(simulation=True).port
        fleet.connection("edgetune", f"127.0.0.1:{port}")
        log(f"{settings.model} on {settings.data}: {clients} simulated nodes ({settings.partition}), "
            f"{settings.rounds} rounds of {settings.strategy}, SuperLink on 127.0.0.1:{port}")
        run_id = fleet.start_run(app_dir, "edgetune", run_settings.to_run_config(),
                                 {"num-supernodes": clients, "client-resources-num-cpus": CPUS_PER_NODE})
        row = fleet.wait_run(run_id, timeout, tick=show_progress)
        show_progress()
    finally:
        fleet.close()
    if fleet.leftovers:
        raise FleetError(f"processes of the fleet outlived it: PIDs {fleet.leftovers}")
    report = _read(report_path)
    status, details = row.get("status", "?"), row.get("status-details", "")
    if report is not None and report["failures"]:
        for f in report["failures"]:
            log(f"node failure: round {f['round']} {f['phase']}: {f['reason']}")
    if status != "finished:completed":
        raise FleetError(f"fleet run {run_id} ended {status}: {details}")
    if report is None:
        raise FleetError(f"fleet run {run_id} completed but wrote no report")
    _summary(report, settings, log)
    return report


def _read(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _summary(report: dict, settings: RunSettings, log) -> None:
    before, after = report["before"], report["after"]
    log(f"val acc {100 * before['val_acc']:.1f}% -> {100 * after['val_acc']:.1f}% after {len(report['rounds'])} "
        f"rounds; each node sent {report['tensor_bytes']:,} B per round ({len(report['trained_tensors'])} "
        f"trained tensors)")
    exp = report.get("export")
    if exp:
        log(f"wrote {settings.out} (onnxruntime: val acc {100 * exp['ort_val_acc']:.1f}%, "
            f"max abs diff {exp['ort_max_abs_diff']:.2e})")
    if settings.report:
        log(f"report written to {settings.report}")
