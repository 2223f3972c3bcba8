"""Link fault injection for the emulator (``--fault-rate P``).

Each frame crossing the emulated link, in either direction, is hit with
probability P by exactly one fault, chosen uniformly among: a flipped bit, 1-3
dropped bytes, a duplicated byte, a truncated frame (the tail, delimiter
included, is lost), a burst of garbage before the frame, and a delay of the
whole frame (up to ``max_delay`` seconds, order on the link is preserved).
"""
from __future__ import annotations

import random
from collections import Counter, deque
from typing import Tuple

KINDS = ("bit_flip", "drop", "duplicate", "truncate", "garbage", "delay")


class FaultInjector:
    def __init__(self, rate: float = 0.0, seed: int = 0, max_delay: float = 0.6):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within 0..1, got {rate}")
        self.rate, self.max_delay = rate, max_delay
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()

    def apply(self, unit: bytes) -> Tuple[bytes, float]:
        """-> (bytes to deliver, delay in seconds) for one frame's worth of bytes."""
        if self.rate <= 0 or len(unit) < 2 or self.rng.random() >= self.rate:
            return unit, 0.0
        kind = self.rng.choice(KINDS)
        self.counts[kind] += 1
        b = bytearray(unit)
        i = self.rng.randrange(len(b))
        if kind == "bit_flip":
            b[i] ^= 1 << self.rng.randrange(8)
        elif kind == "drop":
            del b[i:i + self.rng.randint(1, 3)]
        elif kind == "duplicate":
            b.insert(i, b[i])
        elif kind == "truncate":
            del b[max(1, i):]
        elif kind == "garbage":
            b[0:0] = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 40)))
        else:
            return unit, self.rng.uniform(0.05, self.max_delay)
        return bytes(b), 0.0

    def summary(self) -> dict:
        return {"rate": self.rate, "injected": dict(self.counts), "total": int(sum(self.counts.values()))}


class LinkSide:
    """Fault-injected, order-preserving byte pipe between the host's bytes and a device.

    `device` is anything with the emulated device's byte interface: ``receive(data, now) ->
    answer bytes``, ``poll(now)`` and ``last_rx``. Bytes are faulted one frame at a time."""

    def __init__(self, device, faults: FaultInjector):
        self.device, self.faults = device, faults
        self.rx_pending = bytearray()       # bytes since the last delimiter (fault unit)
        self.rx_queue: deque = deque()      # (release time, bytes) towards the device
        self.tx_queue: deque = deque()      # (release time, bytes) towards the host
        self.tx_buf = bytearray()           # due bytes not yet written

    def _schedule(self, queue, data, delay, now):
        last = queue[-1][0] if queue else now
        queue.append((max(last, now + delay), data))

    def on_bytes(self, data: bytes, now: float) -> None:
        self.rx_pending += data
        while True:
            i = self.rx_pending.find(b"\x00")
            if i < 0:
                break
            unit = bytes(self.rx_pending[:i + 1])
            del self.rx_pending[:i + 1]
            unit, delay = self.faults.apply(unit)
            self._schedule(self.rx_queue, unit, delay, now)

    def pump(self, now: float) -> None:
        if self.rx_pending and not self.rx_queue and now - self.device.last_rx > 0.05:
            # a tail without delimiter (host stopped mid-frame): hand it over unfaulted
            self._schedule(self.rx_queue, bytes(self.rx_pending), 0.0, now)
            self.rx_pending.clear()
        while self.rx_queue and self.rx_queue[0][0] <= now:
            out = self.device.receive(self.rx_queue.popleft()[1], now)
            if out:
                # one fault unit per frame: split the answer at its delimiters
                for unit in _units(out):
                    u, delay = self.faults.apply(unit)
                    self._schedule(self.tx_queue, u, delay, now)
        self.device.poll(now)
        while self.tx_queue and self.tx_queue[0][0] <= now:
            self.tx_buf += self.tx_queue.popleft()[1]

    def next_wakeup(self, now: float) -> float:
        times = [q[0][0] for q in (self.rx_queue, self.tx_queue) if q]
        return max(0.0, min(times) - now) if times else 0.05


def _units(wire: bytes):
    """Split wire bytes after every 0x00: one fault unit per frame (lone delimiters stay clean)."""
    out, start = [], 0
    for i, b in enumerate(wire):
        if b == 0:
            out.append(wire[start:i + 1])
            start = i + 1
    if start < len(wire):
        out.append(wire[start:])
    return out
