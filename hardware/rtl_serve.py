"""cocotb test module behind `edgetune emulator --rtl`: serves the simulated device (device_tb.v:
device_top.v behind a simulated serial line) on a pseudo-terminal or a TCP port until told to stop.

Host bytes from the pty/socket go through the simulated UART line into the device; its answers come
back the same way. Python only moves bytes and advances simulated time in small slices between polls:
every answer, arithmetic included, comes from the RTL and its firmware. Before reset the glue writes
the boot configuration (how much slower than a board the simulated line is, --reset-after), as a
board's bitstream carries its config ROM. Configuration comes from the launcher (rtl_emulator.py)
in EDGETUNE_RTL_SERVE.
"""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import sys
import time
import tty

import cocotb
from cocotb.triggers import Timer

from edgetune.firmware_bridge.emulator import parse_tcp
from edgetune.hardware.device_bridge import CLK_NS, DeviceBench
from edgetune.hardware.sim import params_from_env

CLIENT_BAUD = 921600       # what the host's wire-time estimate assumes (DeviceClient default)


class _Fd:
    """One non-blocking byte endpoint: the pty master, or an accepted TCP connection."""

    def __init__(self, fd, read, write, on_eof=None):
        self.fd, self.read, self.write, self.on_eof = fd, read, write, on_eof
        self.out = bytearray()


def _open(cfg):
    if cfg.get("tcp"):
        host, port = parse_tcp(cfg["tcp"])
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(1)
        srv.setblocking(False)
        shown = f"[{host}]" if fam == socket.AF_INET6 else host
        return f"socket://{shown}:{srv.getsockname()[1]}", srv, None
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    ep = _Fd(master, lambda: os.read(master, 65536), lambda b: os.write(master, b))
    return os.ttyname(slave), None, (ep, slave)


@cocotb.test()
async def serve(dut):
    cfg = json.loads(os.environ["EDGETUNE_RTL_SERVE"])
    p = params_from_env()
    bench = DeviceBench(dut, p)
    fault = dict(fault_rate=min(65535, int(round(float(cfg.get("fault_rate", 0.0)) * 65536))),
                 fault_seed=int(cfg.get("seed", 0)) * 2654435761 % (1 << 32) or 1)
    await bench.reset(**fault)
    # how slow is this simulated UART against the wire time the host assumes?
    t0 = time.monotonic()
    await Timer(100_000 * CLK_NS, "ns")
    clk_rate = 100_000 / max(1e-6, time.monotonic() - t0)
    # how much slower than the board is it: on the line (against the wire time the host assumes) and
    # in computing (against the board's clock); the host scales its timeouts by the larger
    ratio = (bench.byte_clks * CLIENT_BAUD) / (10 * clk_rate)
    scale = round(max(1.0, 3.0 * ratio, int(p["CLOCK_HZ"]) / clk_rate), 1)
    caps = (f'"link_timeout_scale":{scale},"simulated_clock_hz":{int(clk_rate)},'
            f'"clks_per_byte":{bench.byte_clks},"fault_rate_per_byte":{float(cfg.get("fault_rate", 0.0))}')
    await bench.reset(entropy=int.from_bytes(os.urandom(4), "little"), caps=caps,
                      reset_after=int(cfg.get("reset_after") or 0), **fault)

    path, srv, pty_ep = _open(cfg)
    ep = pty_ep[0] if pty_ep else None
    with open(cfg["ready_file"] + ".tmp", "w") as f:
        f.write(path + "\n")
    os.replace(cfg["ready_file"] + ".tmp", cfg["ready_file"])
    print(f"edgetune emulator --rtl: {path}, simulated clock {clk_rate / 1e6:.2f} MHz, "
          f"timeout scale {scale}", file=sys.stderr, flush=True)
    ppid, stop = os.getppid(), cfg["stop_file"]
    trace, t_start = bool(os.environ.get("EDGETUNE_RTL_TRACE")), time.monotonic()   # byte counts to the log
    slice_clks = max(bench.byte_clks * 64, 2048)
    try:
        while not os.path.exists(stop) and os.getppid() == ppid:
            if ep is None and srv is not None:
                r, _, _ = select.select([srv], [], [], 0.02)
                if r:
                    conn, _ = srv.accept()
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    ep = _Fd(conn.fileno(), lambda c=conn: c.recv(65536), lambda b, c=conn: c.send(b), conn.close)
                await bench.step(slice_clks // 8)
                continue
            busy = bench.line_busy() or bench.device_busy() or int(dut.u_dev.u_link.u_ftx.busy.value) or ep.out
            r, w, _ = select.select([ep.fd], [ep.fd] if ep.out else [], [], 0 if busy else 0.01)
            eof = False
            if r:
                try:
                    data = ep.read()
                    if data == b"":
                        eof = True
                    else:
                        if trace:
                            print(f"{time.monotonic() - t_start:9.2f} s host -> device {len(data)} bytes",
                                  file=sys.stderr, flush=True)
                        bench.send(data)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EIO:      # EIO: pty without a client right now
                        eof = True
            if eof:
                if ep.on_eof:
                    ep.on_eof()
                ep = None if srv is not None else ep
                continue
            # the device computing with the line quiet: larger slices, less glue per simulated cycle
            computing = bench.device_busy() and not bench.line_busy() and not ep.out
            got = await bench.step(slice_clks * 8 if computing else slice_clks if busy or r else slice_clks // 8)
            if trace and got:
                print(f"{time.monotonic() - t_start:9.2f} s device -> host {len(got)} bytes", file=sys.stderr, flush=True)
            ep.out += got
            if ep.out:
                try:
                    n = ep.write(bytes(ep.out))
                    del ep.out[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    ep.out.clear()
    finally:
        print(f"edgetune emulator --rtl: bit flips injected on the line: host->device "
              f"{int(dut.flips_h2d.value)}, device->host {int(dut.flips_d2h.value)}", file=sys.stderr, flush=True)
        if pty_ep:
            os.close(pty_ep[0].fd)
            os.close(pty_ep[1])
        if srv is not None:
            srv.close()
