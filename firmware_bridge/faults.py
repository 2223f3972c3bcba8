"""Link fault injection for the emulator (``--fault-rate P``).

Each frame crossing the emulated link, in either direction, is hit with
probability P by exactly one fault, chosen uniformly among: a flipped bit, 1-3
dropped bytes, a duplicated byte, a truncated frame (the tail, delimiter
included, is lost), a burst of garbage before the frame, and a delay of the
whole frame (up to ``max_delay`` seconds, order on the link is preserved).
"""
from __future__ import annotations

import random
from collections import Counter
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
