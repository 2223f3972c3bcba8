"""Flower's processes, started and stopped by PID: a SuperLink, SuperNodes and the `flwr` CLI.

Every process gets an environment that keeps Flower off the network and out of the user's
home (docs/FLEET.md, "What edgetune sets for Flower"):
- `FLWR_HOME` is a folder of the caller's (a temporary one for `fleet simulate`);
- telemetry (`FLWR_TELEMETRY_ENABLED=0`), Flower's update check (`FLWR_DISABLE_UPDATE_CHECK=1`)
  and Ray's usage stats (`RAY_USAGE_STATS_ENABLED=0`) are off;
- the SuperLink runs with `--disable-runtime-dependency-installation` (no `uv sync`);
- `OPENBLAS_NUM_THREADS=1`: Ray's start-up can deadlock while the server does BLAS work;
- `EDGETUNE_FLEET_RUN=<token>` marks every process of one fleet. `Fleet.close()` stops what it
  started by PID, then ends, by PID, every other process of the fleet (`Reaper`): marked ones,
  descendants, and those in the sessions they opened (Flower's SuperExec and Ray start their own).
Every wait has a timeout, and nothing here waits forever.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

from . import FleetError

MARKER = "EDGETUNE_FLEET_RUN"


# Ports to listen on are drawn below Linux's ephemeral range (32768-60999), which outgoing
# connections use: a port the kernel hands out with bind(0) can be taken by one of those before
# the child process binds it.
LISTEN_PORTS = (20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port, outside the ephemeral range, that was free on `host` a moment ago."""
    import random

    for _ in range(50):
        port = random.randrange(*LISTEN_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def executable(name: str) -> str:
    """Flower's console script `name`, preferably from this Python's environment."""
    here = os.path.dirname(sys.executable)
    found = shutil.which(name, path=here) or shutil.which(name)
    if not found:
        raise FleetError(f"cannot find Flower's '{name}' command; is Flower installed "
                         f"(pip install \"edgetune[fleet]\")?")
    return found


def flower_env(home: str, token: str, simulation: bool = False) -> Dict[str, str]:
    """The environment for Flower processes of one fleet (see the module docstring)."""
    env = dict(os.environ)
    env.update({"FLWR_HOME": home, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "RAY_USAGE_STATS_ENABLED": "0", MARKER: token, "PYTHONUNBUFFERED": "1"})
    # the SuperLink and SuperNode start Flower's other commands by name: find them beside this Python
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if simulation:
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["RAY_TMPDIR"] = os.path.join(home, "r")   # Ray's session files go away with the home
    return env


class Process:
    """One child in its own session, its output in a log file (or this process's stdout and stderr
    when `log_path` is None); `stop()` ends it by PID."""

    def __init__(self, name: str, cmd: Sequence[str], env: Dict[str, str], log_path: Optional[str],
                 cwd: Optional[str] = None):
        self.name, self.cmd, self.log_path = name, list(cmd), log_path
        self._log = open(log_path, "ab") if log_path else None
        out = self._log if self._log else None
        try:
            self.proc = subprocess.Popen(self.cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT if out else None, start_new_session=True)
        except OSError as exc:
            if self._log:
                self._log.close()
            raise FleetError(f"cannot start {name}: {exc}") from None
        self.pid = self.proc.pid
        self.port: Optional[int] = None      # the port it listens on, where the caller chose one

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n".join(f.read().rstrip().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM its process group (it leads one), SIGKILL after `grace` seconds."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        _signal_group(self.pid, signal.SIGKILL)   # children left in its group
        if self._log:
            self._log.close()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _process_table(needle: bytes) -> Dict[int, tuple]:
    """{pid: (ppid, session id, carries `needle` in its environment)} of live, non-zombie processes."""
    table: Dict[int, tuple] = {}
    if not os.path.isdir("/proc"):
        return table
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z":
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    marked = needle in f.read().split(b"\0")
            except OSError:
                marked = False
            table[int(entry)] = (int(fields[1]), int(fields[3]), marked)
        except (OSError, IndexError, ValueError):
            continue
    return table


def marked_pids(token: str, variable: str = MARKER) -> List[int]:
    """PIDs of live processes whose environment has `variable=token` (Linux /proc)."""
    me = os.getpid()
    return sorted(pid for pid, (_, _, marked) in _process_table(f"{variable}={token}".encode()).items()
                  if marked and pid != me)


class Reaper:
    """Finds every process of one fleet, by PID, so that none outlives it (Linux /proc).

    A process belongs to the fleet when it carries the fleet's marker in its environment, descends
    from a process the fleet started, or shares a session with such a process (Flower's SuperExec
    and Ray start sessions of their own, whose daemons are reparented to init when their parent
    dies, and some Ray processes no longer show their environment once they rename themselves).
    The caller's own session is never one of them.
    """

    def __init__(self, token: str):
        self.needle = f"{MARKER}={token}".encode()
        self.roots: List[int] = []
        self.sessions: set = set()

    def members(self) -> List[int]:
        table = _process_table(self.needle)
        me = os.getpid()
        own_session = table.get(me, (0, os.getsid(0), False))[1]
        found = {pid for pid, (_, _, marked) in table.items() if marked} | {r for r in self.roots if r in table}
        children: Dict[int, List[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(found)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        self.sessions |= {table[pid][1] for pid in found} - {own_session, 0}
        found |= {pid for pid, (_, sid, _) in table.items() if sid in self.sessions}
        found.discard(me)
        return sorted(found)

    def end_all(self, grace: float = 5.0) -> List[int]:
        """SIGTERM every member, SIGKILL what is left after `grace` seconds; return what still lives."""
        pids = self.members()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = self.members()
        for _ in range(3):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
            pids = self.members()
            if not pids:
                break
        return pids


def wait_healthy(url: str, proc: Process, timeout: float, ca: Optional[str] = None) -> None:
    """Poll `url` (a /health endpoint) until it answers 2xx; fail early if `proc` exits."""
    ctx = ssl.create_default_context(cafile=ca) if url.startswith("https") else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise FleetError(f"{proc.name} exited with code {proc.proc.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=ctx) as rsp:
                if 200 <= rsp.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise FleetError(f"{proc.name} did not answer on {url} within {timeout:.0f} s:\n{proc.log_tail()}")


class Fleet:
    """The processes of one fleet, with a shared Flower home and marker; a context manager whose
    exit stops them all (by PID) and checks that none is left."""

    def __init__(self, home: str, simulation: bool = False):
        self.home = home
        self.token = secrets.token_hex(8)
        self.env = flower_env(home, self.token, simulation)
        self.reaper = Reaper(self.token)
        self.procs: List[Process] = []
        self.leftovers: List[int] = []
        os.makedirs(home, exist_ok=True)

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, name: str, cmd: Sequence[str], to_log: bool = True) -> Process:
        """Start `cmd`; its output goes to HOME/NAME.log, or to this process's output if not `to_log`."""
        p = Process(name, cmd, self.env, os.path.join(self.home, f"{name}.log") if to_log else None)
        self.procs.append(p)
        self.reaper.roots.append(p.pid)
        return p

    def close(self) -> None:
        """Stop what this fleet started, then every other process of it (see Reaper), by PID."""
        self.reaper.members()            # remember the sessions while the process tree is whole
        for p in reversed(self.procs):
            p.stop()
        self.leftovers = self.reaper.end_all()

    # -- SuperLink -----------------------------------------------------------------------
    def superlink(self, port: Optional[int] = None, simulation: bool = False, certs: Optional[dict] = None,
                  host: str = "127.0.0.1", timeout: float = 60.0, attempts: int = 3) -> Process:
        """Start `flower-superlink` (TLS when `certs` has ca/cert/key paths) and wait until it answers.
        Without `port` it picks a free one, and another if that was taken meanwhile; `.port` tells which."""
        for attempt in range(1 if port else attempts):
            use = port or free_port(host)
            cmd = [executable("flower-superlink"), "--host", host, "--port", str(use),
                   "--disable-runtime-dependency-installation",
                   "--database", os.path.join(self.home, "superlink.db")]
            cmd += ["--simulation"] if simulation else []
            if certs:
                cmd += ["--ssl-ca-certfile", certs["ca"], "--ssl-certfile", certs["cert"], "--ssl-keyfile",
                        certs["key"]]
            else:
                cmd += ["--insecure"]
            p = self.start("superlink", cmd)
            p.port = use
            scheme = "https" if certs else "http"
            try:
                wait_healthy(f"{scheme}://{host}:{use}/health", p, timeout, certs["ca"] if certs else None)
                return p
            except FleetError:
                if port or attempt == attempts - 1 or "address already in use" not in p.log_tail(20):
                    raise
                p.stop()
                self.procs.remove(p)
        raise AssertionError("unreachable")

    def connection(self, name: str, address: str, ca: Optional[str] = None) -> None:
        """Write the Flower configuration (FLWR_HOME/config.toml) with one SuperLink connection."""
        lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]", f'address = "{address}"']
        lines += [f'root-certificates = "{ca}"'] if ca else ["insecure = true"]
        with open(os.path.join(self.home, "config.toml"), "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- flwr CLI --------------------------------------------------------------------------
    def flwr(self, args: Sequence[str], timeout: float = 60.0) -> dict:
        """Run `flwr ARGS --format json` and return its JSON answer (FleetError on failure)."""
        cmd = [executable("flwr"), *args, "--format", "json"]
        try:
            out = subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FleetError(f"'flwr {args[0]}' did not answer within {timeout:.0f} s") from None
        try:
            doc = json.loads(out.stdout[out.stdout.index("{"):]) if "{" in out.stdout else {}
        except ValueError:
            doc = {}
        if out.returncode != 0 or not doc.get("success", False):
            detail = doc.get("error-message") or (out.stderr or out.stdout).strip()[-600:]
            raise FleetError(f"'flwr {' '.join(args[:1])}' failed: {detail}")
        return doc

    def start_run(self, app_dir: str, connection: str, run_config: Dict[str, object],
                  federation_config: Optional[Dict[str, object]] = None) -> int:
        """`flwr run APP CONNECTION` with run-config overrides; returns the run id."""
        overrides = os.path.join(self.home, "run-config.toml")
        with open(overrides, "w") as f:
            f.write(toml_lines(run_config))
        args = ["run", app_dir, connection, "--run-config", overrides]
        if federation_config:
            args += ["--federation-config", _toml_pairs(federation_config)]
        return int(self.flwr(args)["run-id"])

    def run_status(self, run_id: int) -> dict:
        """The run's row from `flwr ls --run-id` (status, status-details, ...)."""
        doc = self.flwr(["ls", "--run-id", str(run_id)])
        for row in doc.get("runs", []):
            if int(row["run-id"]) == run_id:
                return row
        raise FleetError(f"the SuperLink does not know run {run_id}")

    def wait_run(self, run_id: int, timeout: float, tick=None, poll: float = 2.0) -> dict:
        """Poll the run's status every `poll` seconds until it has finished (any way) and return its row;
        `tick()` runs every half second in between. A run still going after `timeout` seconds is stopped
        with `flwr stop` and reported. (Each poll starts the flwr CLI, about a second of CPU.)"""
        deadline = time.monotonic() + timeout
        while True:
            row = self.run_status(run_id)
            self.reaper.members()        # learn the sessions the run opens while their leaders live
            if str(row.get("status", "")).startswith("finished"):
                return row
            if time.monotonic() > deadline:
                with contextlib.suppress(FleetError):
                    self.flwr(["stop", str(run_id)], timeout=30)
                raise FleetError(f"run {run_id} did not finish within {timeout:.0f} s (status {row.get('status')})")
            for p in self.procs:
                if p.name == "superlink" and not p.alive():
                    raise FleetError(f"the SuperLink exited during run {run_id}:\n{p.log_tail()}")
            next_poll = time.monotonic() + poll
            while time.monotonic() < next_poll:
                if tick is not None:
                    tick()
                time.sleep(0.5)


def toml_value(v: object) -> str:
    """One TOML value: bool, int, float or string (JSON's string escapes are valid TOML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def toml_lines(values: Dict[str, object]) -> str:
    """'key = value' lines for flat TOML tables."""
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def _toml_pairs(values: Dict[str, object]) -> str:
    """{'a': 1} -> 'a=1' (the form `flwr run --federation-config` takes)."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())
