"""`edgetune emulator --rtl`: the device simulated in RTL, arithmetic included.

It builds hardware/tb/device_tb.v (device_top.v: link, control processor and firmware, training
array; once, cached) for the simulator, runs the cocotb module rtl_serve.py in it, prints the device
path alone on the first line of stdout and serves until SIGTERM/SIGINT. Its working folder
(/tmp/edgetune-rtl-*: ready/stop files, the simulation log) is removed when it stops.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

START_TIMEOUT = 600.0      # includes a first Verilator build (about a minute on 2 cores)


def serve_rtl_main(pty: bool = True, tcp: Optional[str] = None, fault_rate: float = 0.0, seed: int = 0,
                   reset_after: Optional[int] = None, simulator: str = "verilator", out=None) -> int:
    """Run the simulated device until stopped; returns an exit code."""
    from ..firmware_bridge.emulator import parse_tcp
    from ..runtime.errors import UsageError
    from . import sim as S

    if simulator not in S.SIMULATORS:
        raise UsageError(f"--simulator must be one of {', '.join(S.SIMULATORS)}, got {simulator!r}")
    if not 0.0 <= fault_rate <= 1.0:
        raise UsageError(f"--fault-rate must be within 0..1, got {fault_rate}")
    if reset_after is not None and reset_after < 1:
        raise UsageError(f"--reset-after must be at least 1, got {reset_after}")
    if tcp is not None:
        try:
            parse_tcp(tcp)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        S.check_simulator(simulator)
        S.picorv32_source()
        from .firmware import check_tools

        check_tools()
    except S.SimulatorMissing as exc:
        raise UsageError(f"emulator --rtl: {exc}") from None
    work = Path(tempfile.mkdtemp(prefix="edgetune-rtl-"))
    try:
        return _serve(work, pty, tcp, fault_rate, seed, reset_after, simulator, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _serve(work: Path, pty, tcp, fault_rate, seed, reset_after, simulator, out) -> int:
    from ..runtime.errors import UsageError
    from . import sim as S

    ready, stop, log = work / "ready", work / "stop", work / "sim.log"
    cfg = {"tcp": tcp, "fault_rate": fault_rate, "seed": seed, "reset_after": reset_after,
           "ready_file": str(ready), "stop_file": str(stop)}
    os.environ.pop("PYTEST_CURRENT_TEST", None)     # the runner must not act as if under pytest
    failure: list = []

    def run():
        import json

        try:
            S.run("device_tb", simulator, "edgetune.hardware.rtl_serve", S.DEVICE_PARAMS,
                  env={"EDGETUNE_RTL_SERVE": json.dumps(cfg)}, log_file=log)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    def on_signal(signum, frame):
        try:
            stop.write_text("stop\n")
        except OSError:          # already stopping: the folder is gone
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    print(f"edgetune emulator --rtl: building/starting the {simulator} simulation (log {log})",
          file=sys.stderr, flush=True)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.exists():
        if not th.is_alive() or time.monotonic() > deadline or stop.exists():
            stop.write_text("stop\n")
            th.join(30)
            tail = _tail(log)
            raise UsageError(f"emulator --rtl: the simulation did not start ({failure[0] if failure else 'timeout'})"
                             + (f": {tail}" if tail else ""))
        time.sleep(0.05)
    print(ready.read_text().strip(), file=out or sys.stdout, flush=True)
    while th.is_alive():
        th.join(0.2)
    try:       # the simulation's closing summary (bit flips injected on the line), before its log goes
        for line in log.read_text(errors="replace").splitlines():
            if "bit flips injected" in line:
                print(line.strip(), file=sys.stderr, flush=True)
    except OSError:
        pass
    print("edgetune emulator --rtl: stopped", file=sys.stderr, flush=True)
    return 0


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])
