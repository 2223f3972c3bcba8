"""What a fine-tune saved, as text: the short summary `finetune` prints at the end and the
per-layer table of `edgetune report` (both read only the report dict, so a saved report
shows the same)."""
from __future__ import annotations

from typing import List

PHASES = ("fp", "bp", "wg")


def _pct(part, whole) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _mib(n) -> str:
    return f"{n / 2 ** 20:.2f} MiB" if n >= 2 ** 20 else f"{n / 1024:.1f} KiB"


def summary_lines(rep: dict) -> List[str]:
    """Three lines: MACs skipped per phase, activation memory stored vs dense, time per step."""
    macs = rep["macs"]["per_phase"]
    skipped = ", ".join(f"{ph.upper()} {_pct(macs['dense'][ph] - macs['executed'][ph], macs['dense'][ph])}"
                        for ph in PHASES if macs["dense"][ph])
    need = ", ".join(f"{ph.upper()} {_pct(macs['dense'][ph] - macs['required'][ph], macs['dense'][ph])}"
                     for ph in PHASES if macs["dense"][ph])
    lines = [f"MACs skipped: {skipped} (the constraints allow {need}; "
             f"{rep['macs'].get('executed_source', 'engine counters')}, batch {rep['macs']['batch']})"]
    ab = rep.get("activation_bytes") or {}
    if ab.get("dense"):
        lines.append(f"activation memory kept for backward: {_mib(ab['stored'])} stored vs {_mib(ab['dense'])} dense "
                     f"({_pct(ab['stored'], ab['dense'])})")
    steps = rep.get("steps") or 0
    ps = rep.get("phase_seconds") or {}
    if steps:
        per = {k: 1e3 * v / steps for k, v in ps.items()}
        lines.append(f"time per step: {sum(per.values()):.1f} ms (FP {per.get('fp', 0):.1f}, BP {per.get('bp', 0):.1f}, "
                     f"WG {per.get('wg', 0):.1f}, update {per.get('update', 0):.1f}) over {steps} steps")
    return lines


def layer_table(rep: dict) -> str:
    """The per-layer table: sparsities, MACs dense/required/executed (all phases) and activation bytes."""
    head = (f"{'layer':<24} {'act':<9} {'act 0s':>6} {'0 px':>6} {'0 blk':>6} {'grad 0s':>7} {'MACs dense':>12} "
            f"{'required':>12} {'executed':>12} {'saved':>6} {'act KiB':>8} {'stored':>7}")
    rows = [head, "-" * len(head)]
    tot = {"dense": 0, "required": 0, "executed": 0, "bd": 0, "bs": 0}
    have_exec = True
    for layer in rep["layers"]:
        dn = sum(layer["macs_dense"].values())
        rq = sum(layer["macs_required"].values())
        ex = layer.get("macs_executed")
        ex = sum(ex.values()) if ex else None
        have_exec &= ex is not None
        ab = layer.get("act_bytes") or {"dense": 0, "stored": 0}
        tot["dense"] += dn
        tot["required"] += rq
        tot["executed"] += ex or 0
        tot["bd"] += ab["dense"]
        tot["bs"] += ab["stored"]
        zp, zb = layer.get("zero_pixels"), layer.get("zero_blocks")   # measured by the native kernels only
        rows.append(f"{layer['name'][:24]:<24} {layer['activation'][:9]:<9} {100 * layer['act_sparsity']:>5.1f}% "
                    f"{(f'{100 * zp:.1f}%' if zp is not None else '-'):>6} "
                    f"{(f'{100 * zb:.1f}%' if zb is not None else '-'):>6} "
                    f"{100 * layer['grad_sparsity']:>6.1f}% {dn:>12,} {rq:>12,} "
                    f"{(f'{ex:,}' if ex is not None else '-'):>12} "
                    f"{(_pct(dn - ex, dn) if ex is not None else '-'):>6} {ab['dense'] / 1024:>8.1f} "
                    f"{_pct(ab['stored'], ab['dense']):>7}")
    rows.append("-" * len(head))
    ex_total = f"{tot['executed']:,}" if have_exec else "-"
    saved = _pct(tot["dense"] - tot["executed"], tot["dense"]) if have_exec else "-"
    rows.append(f"{'total':<24} {'':<9} {'':>6} {'':>6} {'':>6} {'':>7} {tot['dense']:>12,} {tot['required']:>12,} {ex_total:>12} "
                f"{saved:>6} {tot['bd'] / 1024:>8.1f} {_pct(tot['bs'], tot['bd']):>7}")
    return "\n".join(rows)


def history_table(rep: dict) -> str:
    """One line per epoch (epoch 0 = before training)."""
    lines = [f"{'epoch':>5} {'loss':>8} {'train_acc':>9} {'val_acc':>8} {'seconds':>8}",
             f"{0:>5} {'':>8} {'':>9} {100 * rep['before']['val_acc']:>7.1f}% {'':>8}"]
    kept = (rep.get("selected") or {}).get("epoch")
    for h in rep["history"]:
        mark = "  <- kept" if h["epoch"] == kept else ""
        lines.append(f"{h['epoch']:>5} {h['loss']:>8.4f} {100 * h['train_acc']:>8.1f}% "
                     f"{100 * h.get('val_acc', float('nan')):>7.1f}% {h['seconds']:>8.1f}{mark}")
    if kept == 0:
        lines[1] += "  <- kept"
    return "\n".join(lines)


def report_text(rep: dict) -> str:
    """Everything `edgetune report` prints."""
    head = (f"{rep['model']} on {rep.get('data')}: engine {rep['engine']}; val acc "
            f"{100 * rep['before']['val_acc']:.1f}% -> {100 * rep['after']['val_acc']:.1f}%")
    parts = [head]
    if rep.get("classes"):
        parts.append("classes: " + ", ".join(rep["classes"]))
    parts += ["", history_table(rep), "", layer_table(rep), ""] + summary_lines(rep)
    return "\n".join(parts)
