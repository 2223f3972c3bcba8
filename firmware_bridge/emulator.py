"""The host-side emulator of the sparse-training accelerator, served on a pty or TCP.

    edgetune emulator [--pty | --tcp HOST:PORT] [--fault-rate P] [--format fp32|bf16] [--reset-after N] [--seed S]

(`python -m edgetune.firmware_bridge.emulator` runs the same command.)

The first line of stdout is the device path alone (a pty path, or
``socket://HOST:PORT``), flushed; then it serves until SIGTERM/SIGINT.
``--tcp`` binds loopback unless a host is given explicitly.
"""
from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import time
import tty
from typing import Optional

from .device_core import EmulatedDevice
from .faults import FaultInjector, LinkSide


class _Stop:
    flag = False


def _install_signals():
    def handler(signum, frame):
        _Stop.flag = True
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)


def _parent_gone(ppid: Optional[int]) -> bool:
    return ppid is not None and os.getppid() != ppid


def _serve_fd(side: LinkSide, fd: int, read, write, ppid) -> bool:
    """Serve one open fd until stop, parent exit, or EOF. Returns False on EOF."""
    while not _Stop.flag and not _parent_gone(ppid):
        now = time.monotonic()
        side.pump(now)
        wl = [fd] if side.tx_buf else []
        timeout = min(0.05, side.next_wakeup(now))
        try:
            r, w, _ = select.select([fd], wl, [], timeout)
        except InterruptedError:
            continue
        if r:
            try:
                data = read()
            except BlockingIOError:
                data = None
            except OSError as exc:
                if exc.errno == errno.EIO:    # pty: no client right now
                    time.sleep(0.02)
                    continue
                return False
            if data == b"":
                return False
            if data:
                side.on_bytes(data, time.monotonic())
        if w and side.tx_buf:
            try:
                n = write(bytes(side.tx_buf))
                del side.tx_buf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return False
    return True


def serve_pty(side: LinkSide, ppid=None, out=None) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.set_blocking(master, False)
    print(path, file=out or sys.stdout, flush=True)
    try:
        # the slave stays open here too, so the master never sees EOF between clients
        _serve_fd(side, master, lambda: os.read(master, 65536), lambda b: os.write(master, b), ppid)
    finally:
        os.close(master)
        os.close(slave)


def parse_tcp(spec: str):
    host, _, port = spec.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port_n = int(port)
    except ValueError:
        raise ValueError(f"--tcp expects HOST:PORT or :PORT, got {spec!r}") from None
    if not 0 <= port_n <= 65535:     # socket.bind would raise OverflowError, not an OSError
        raise ValueError(f"--tcp {spec}: the port must be 0 to 65535 (0: any free port)")
    return host, port_n


def serve_tcp(side: LinkSide, spec: str, ppid=None, out=None) -> None:
    host, port = parse_tcp(spec)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"edgetune emulator: WARNING listening on {host}, not loopback", file=sys.stderr, flush=True)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    shown = f"[{host}]" if fam == socket.AF_INET6 else host
    print(f"socket://{shown}:{srv.getsockname()[1]}", file=out or sys.stdout, flush=True)
    try:
        while not _Stop.flag and not _parent_gone(ppid):
            r, _, _ = select.select([srv], [], [], 0.1)
            if not r:
                continue
            conn, _addr = srv.accept()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                _serve_fd(side, conn.fileno(), lambda: conn.recv(65536), conn.send, ppid)
            finally:
                conn.close()
    finally:
        srv.close()


def serve_main(pty: bool = True, tcp: Optional[str] = None, fault_rate: float = 0.0, fmt: str = "fp32",
               reset_after: Optional[int] = None, seed: int = 0, engine: Optional[str] = None,
               exit_with_parent: bool = False) -> int:
    """Run the emulator until stopped (what `edgetune emulator` calls). Returns an exit code.

    Exactly one of pty / tcp is used; tcp ("HOST:PORT" or ":PORT", port 0 = any) wins when given.
    """
    from ..runtime.errors import UsageError

    if fmt not in ("fp32", "bf16"):
        raise UsageError(f"--format must be fp32 or bf16, got {fmt!r}")
    if not 0.0 <= fault_rate <= 1.0:
        raise UsageError(f"--fault-rate must be within 0..1, got {fault_rate}")
    if reset_after is not None and reset_after < 1:
        raise UsageError(f"--reset-after must be at least 1, got {reset_after}")
    if tcp is not None:
        try:
            parse_tcp(tcp)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    device = EmulatedDevice(fmt=fmt, engine=engine, reset_after=reset_after, seed=seed)
    side = LinkSide(device, FaultInjector(fault_rate, seed=seed))
    device.fault_summary = side.faults.summary
    _install_signals()
    ppid = os.getppid() if exit_with_parent else None
    print(f"edgetune emulator: engine={device.engine_name} format={fmt} fault_rate={fault_rate} "
          f"reset_after={reset_after}", file=sys.stderr, flush=True)
    try:
        if tcp is not None:
            serve_tcp(side, tcp, ppid)
        else:
            serve_pty(side, ppid)
    except OSError as exc:
        raise UsageError(f"emulator: {exc}") from None
    finally:
        print(f"edgetune emulator: stopped; faults {side.faults.summary()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    # `python -m edgetune.firmware_bridge.emulator ARGS` is `edgetune emulator ARGS`: one CLI, one error mapping
    from ..runtime.cli import main

    main(["emulator", *sys.argv[1:]])
