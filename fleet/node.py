"""`edgetune fleet supernode`: one device's node, a Flower SuperNode in a child process.

The device's own settings travel as the SuperNode's node config (`data`, `engine`, `device`,
`model`, `name`, `threads`), which the ClientApp reads (task.node_data, task.make_node_engine).
The node runs until it is stopped (Ctrl-C or SIGTERM); it then stops the SuperNode and the
ClientApp processes it started, by PID.
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from typing import Callable, Optional

from edgetune.runtime.errors import UsageError

from .processes import Fleet, executable, free_port, toml_value


def node_config(data: str, engine: Optional[str], device: Optional[str], model: Optional[str],
                name: Optional[str], threads: int) -> str:
    """The `--node-config` string: space-separated key=value pairs with TOML values."""
    values = {"data": _data_path(data)}
    for key, value in (("engine", engine), ("device", device), ("model", _abs(model)), ("name", name)):
        if value:
            values[key] = value
    if threads:
        values["threads"] = int(threads)
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


def _data_path(spec: str) -> str:
    from edgetune import models

    if os.path.exists(spec):
        return os.path.abspath(spec)
    if models.is_bundled_dataset(spec):
        return spec
    raise UsageError(f"--data {spec}: no such data file, folder or bundled dataset")


def _abs(path: Optional[str]) -> Optional[str]:
    if path and os.path.exists(path):
        return os.path.abspath(path)
    return path


def supernode_command(superlink: str, config: str, runtime_port: int, root_certificates: Optional[str],
                      insecure: bool) -> list:
    """The `flower-supernode` command line for one node."""
    if insecure and root_certificates:
        raise UsageError("--insecure and --root-certificates exclude each other")
    if root_certificates and not os.path.isfile(root_certificates):
        raise UsageError(f"--root-certificates {root_certificates}: no such file")
    host, _, port = superlink.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--superlink must be HOST:PORT, got {superlink!r}")
    cmd = [executable("flower-supernode"), "--superlink", superlink, "--node-config", config,
           "--host", "127.0.0.1", "--port", str(runtime_port)]
    if insecure:
        cmd.append("--insecure")
    elif root_certificates:
        cmd += ["--root-certificates", os.path.abspath(root_certificates)]
    return cmd


def run_supernode(superlink: str, data: str, engine: Optional[str] = None, device: Optional[str] = None,
                  model: Optional[str] = None, name: Optional[str] = None, threads: int = 0,
                  root_certificates: Optional[str] = None, insecure: bool = False,
                  flwr_home: Optional[str] = None, echo: Callable[[str], None] = print) -> int:
    """Run the SuperNode until it exits or this process is told to stop; return its exit code."""
    if device and engine not in (None, "device"):
        raise UsageError("--device applies to --engine device only")
    config = node_config(data, engine or ("device" if device else None), device, model, name, threads)
    with tempfile.TemporaryDirectory(prefix="etnode-") as tmp:
        home = flwr_home or tmp
        cmd = supernode_command(superlink, config, free_port(), root_certificates, insecure)
        stop = {"signal": None}

        def on_signal(signum, _frame):
            stop["signal"] = signum

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        fleet = Fleet(home)
        try:
            echo(f"node {name or ''} connecting to {superlink} ({'TLS' if not insecure else 'no TLS'}); "
                 f"data {data}; engine {engine or 'the run default'}; Ctrl-C stops it")
            node = fleet.start("supernode", cmd, to_log=False)
            while node.alive() and stop["signal"] is None:
                time.sleep(0.5)
            code = node.proc.returncode
            if code not in (None, 0):
                echo(f"the SuperNode exited with code {code}")
        finally:
            fleet.close()
            for s, handler in old.items():
                signal.signal(s, handler)
    if stop["signal"] is not None:
        return 0
    return int(code or 0)
