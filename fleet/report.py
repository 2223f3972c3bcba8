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


def report_text(rep: dict) -> str:
    """What `edgetune report FLEET.json` prints: the run, one line per round, the nodes of the last
    round, failures and the exported model."""
    st = rep.get("settings") or {}
    rounds = rep["rounds"]
    planned = st.get("rounds", len(rounds))
    head = (f"{rep['model']} on {rep.get('data')}: fleet of {st.get('min-nodes', '?')} nodes "
            f"({st.get('partition', '?')}), {len(rounds)} rounds of {st.get('strategy', '?')}, engine "
            f"{st.get('engine', '?')}; val acc {100 * rep['before']['val_acc']:.1f}% -> "
            f"{100 * rep['after']['val_acc']:.1f}% ({rep.get('status', '?')})")
    lines = [head, "", round_line({"round": 0, "val_acc": rep["before"]["val_acc"]}, planned)]
    lines += [round_line(r, planned) for r in rounds]
    if rounds:
        lines += ["", *_node_table(rounds[-1])]
    lines.append("")
    if rep.get("trained_tensors") is not None:
        lines.append(f"trained {len(rep['trained_tensors'])} tensors; each node sent {rep.get('tensor_bytes', 0):,} B "
                     f"per round; {rep.get('seconds', 0):.1f} s in all")
    for f in rep.get("failures") or []:
        lines.append(f"node failure: round {f['round']} {f['phase']}: {f['reason']}")
    exp = rep.get("export")
    if exp:
        acc, diff = exp.get("ort_val_acc", float("nan")), exp.get("ort_max_abs_diff", float("nan"))
        lines.append(f"wrote {exp.get('path')} (onnxruntime: val acc {100 * acc:.1f}%, max abs diff {diff:.2e})")
    return "\n".join(lines).rstrip()


def _node_table(last: dict) -> List[str]:
    """The nodes of a round: examples, training loss and accuracy, and their own evaluation."""
    scores = {e["node_id"]: e for e in last.get("evaluation") or []}
    rows = [f"{'node (round ' + str(last['round']) + ')':<24} {'examples':>8} {'train_loss':>10} {'train_acc':>9} "
            f"{'val_acc':>8}"]
    for c in sorted(last.get("clients") or [], key=lambda c: str(c.get("name"))):
        ev = scores.get(c["node_id"])
        val = f"{100 * ev['val-acc']:.1f}%" if ev else "-"
        rows.append(f"{str(c.get('name'))[:24]:<24} {c['num-examples']:>8} {c['train-loss']:>10.4f} "
                    f"{100 * c['train-acc']:>8.1f}% {val:>8}")
    return rows


def _plain(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))
