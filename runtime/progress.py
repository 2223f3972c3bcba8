"""The per-epoch progress line for a terminal.

`epoch 2/4 [#######.......] 12/19 steps  ETA 3s  loss 0.4321`, redrawn in place. It
never hides the cursor (so nothing is left hidden when a run ends, fails or is
interrupted) and `finish()` erases the line, so the next output starts at column 0.
"""
from __future__ import annotations

import shutil
import time

CLEAR_LINE = "\r\x1b[K"
MIN_REDRAW = 0.1    # seconds between redraws: a fast epoch must not flood a slow terminal


class ProgressBar:
    """Progress of one epoch; `update(n)`, `set_loss(value)`, `finish()` (see local_fit)."""

    def __init__(self, total: int, label: str, stream, start: int = 0):
        self.total, self.label, self.stream = max(int(total), 1), label, stream
        self.done, self.loss = start, None
        self.t0, self.first = time.monotonic(), start
        self._last_draw = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        now = time.monotonic()
        if now - self._last_draw >= MIN_REDRAW or self.done == self.total:
            self._draw(now)

    def set_loss(self, loss: float) -> None:
        """The running mean loss of the epoch so far (shown on the next redraw)."""
        self.loss = loss

    def line(self, now: float) -> str:
        """The text of the progress line at time `now`."""
        steps = f"{self.done}/{self.total} steps"
        ran = self.done - self.first
        if ran > 0 and self.done < self.total:
            eta = (now - self.t0) / ran * (self.total - self.done)
            timing = f"ETA {_duration(eta)}"
        else:
            timing = f"{_duration(now - self.t0)}"
        loss = f"  loss {self.loss:.4f}" if self.loss is not None else ""
        tail = f" {steps}  {timing}{loss}"
        cols = shutil.get_terminal_size((80, 24)).columns
        room = cols - len(self.label) - len(tail) - 4
        if room >= 10:
            width = min(room, 30)
            fill = int(width * self.done / self.total)
            return f"{self.label} [{'#' * fill}{'.' * (width - fill)}]{tail}"
        return f"{self.label}{tail}"[:max(cols - 1, 1)]

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self.stream.write(CLEAR_LINE + self.line(now))
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """Erase the line (idempotent); the caller prints the epoch summary next."""
        if self._drawn:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._drawn = False


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"
