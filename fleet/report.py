"""The fleet report and the per-round progress lines (no Flower imports).

The server writes the report (JSON) at the end of a run and one JSON line per round to the
progress file while it runs; `edgetune fleet simulate` prints both. Keys are documented in
docs/FLEET.md.
"""
from __future__ import annotations

import json
import os
from typing import List, Optional

from edgetune.runtime.report import write_report

from .task import RunSettings


def build(settings: RunSettings, names: List[str], tensor_bytes: int, before: dict, rounds: List[dict],
          export: Optional[dict], seconds: float) -> dict:
    """The report dict of a finished run."""
    failures = [f for r in rounds for f in r["failures"]]
    after = {"val_acc": rounds[-1]["val_acc"], "val_loss": rounds[-1]["val_loss"]} if rounds else before
    return {
        "model": settings.model, "data": settings.data, "settings": settings.to_run_config(),
        "trained_tensors": names, "tensor_bytes": tensor_bytes,
        "before": before, "after": after, "rounds": rounds, "failures": failures,
        "status": "completed_with_failures" if failures else "completed",
        "export": export, "seconds": seconds,
    }


def write(path: str, report: dict) -> None:
    """Write the report atomically (like `edgetune finetune --report`)."""
    write_report(path, report)


def append_progress(path: str, entry: dict) -> None:
    """Append one JSON line; a reader sees whole lines only (one write of one line, then flush)."""
    line = json.dumps(entry, default=_plain) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def round_line(entry: dict, rounds: int) -> str:
    """One printed line per round: accuracy, node count, bytes each way, time."""
    if entry["round"] == 0:
        return f"round 0/{rounds}  val_acc {100 * entry['val_acc']:.1f}%  (the base model, before any round)"
    ok = len(entry["clients"])
    failed = {f["node_id"] for f in entry["failures"]}
    text = (f"round {entry['round']}/{rounds}  val_acc {100 * entry['val_acc']:.1f}%  "
            f"nodes {ok}/{entry['sampled']}")
    if "train_loss" in entry:
        text += f"  train_loss {entry['train_loss']:.4f}"
    text += (f"  sent {entry['bytes_down']:,} B down, {entry['bytes_up']:,} B up (tensors)"
             f"  {entry['seconds']:.1f}s")
    if failed:
        text += f"  FAILED nodes: {len(failed)}"
    return text


def _plain(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))
