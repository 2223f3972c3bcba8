"""An in-process transport to an emulated device: the real client and session, no pty, no process.

``LoopbackTransport(EmulatedDevice())`` keeps the Transport contract (transport.py): a write
hands the bytes to the device, which answers at once; a read returns what the device answered,
or raises IoTimeoutError when nothing will come within the timeout. With a FaultInjector the
bytes cross the same fault-injected pipe as the served emulator's (faults.LinkSide), delays
included, so retries, resynchronisation and duplicate answers run exactly as over a pty.
"""
from __future__ import annotations

import time
from typing import Optional

from .errors import IoTimeoutError, TransportClosedError
from .faults import FaultInjector, LinkSide
from .transport import Transport, check_timeout


class LoopbackTransport(Transport):
    """The byte link to `device` (an EmulatedDevice or anything with its receive/poll interface)."""

    url = "loopback://emulated-device"

    def __init__(self, device, faults: Optional[FaultInjector] = None):
        self.device = device
        self.side = LinkSide(device, faults or FaultInjector(0.0))
        self._open = False

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def _need_open(self) -> None:
        if not self._open:
            raise TransportClosedError(f"{self.url} is closed")

    def write(self, data: bytes, timeout_sec: float) -> None:
        check_timeout(timeout_sec)
        self._need_open()
        now = time.monotonic()
        self.side.on_bytes(bytes(data), now)
        self.side.pump(now)

    def read(self, n: int, timeout_sec: float) -> bytes:
        deadline = time.monotonic() + check_timeout(timeout_sec)
        self._need_open()
        while True:
            now = time.monotonic()
            self.side.pump(now)
            if self.side.tx_buf:
                out = bytes(self.side.tx_buf[:n])
                del self.side.tx_buf[:n]
                return out
            pending = self.side.rx_queue or self.side.tx_queue or self.side.rx_pending
            if not pending or now >= deadline:
                # nothing is on its way: the device answered everything it got (or dropped it)
                raise IoTimeoutError(f"no byte from {self.url} within {timeout_sec:.3g} s")
            time.sleep(min(self.side.next_wakeup(now), deadline - now, 0.01))
