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
    """MACs executed per phase, activation memory stored vs dense, time per step; each figure has
    one meaning, the same here, in `edgetune report` and in the plot (docs/ARCHITECTURE.md,
    "The report"), and a figure over 100% says why on a line of its own."""
    lines = _mac_lines(rep) + _memory_lines(rep)
    timing = _time_line(rep)
    return lines + ([timing] if timing else [])


def _mac_lines(rep: dict) -> List[str]:
    """Executed MACs as a share of dense per phase: what the engine that trained multiplied, SIMD
    padding lanes included (so a layer narrower than a vector can exceed 100%)."""
    macs = rep["macs"]["per_phase"]
    shown = [ph for ph in PHASES if macs["dense"][ph]]
    executed = ", ".join(f"{ph.upper()} {_pct(macs['executed'][ph], macs['dense'][ph])}" for ph in shown)
    need = ", ".join(f"{ph.upper()} {_pct(macs['required'][ph], macs['dense'][ph])}" for ph in shown)
    lines = [f"MACs executed, % of dense: {executed} (the constraints require {need}; "
             f"{rep['macs'].get('executed_source', 'engine counters')}, batch {rep['macs']['batch']})"]
    over = [ph.upper() for ph in shown if macs["executed"][ph] > macs["dense"][ph]]
    if over:
        wide = [layer["name"] for layer in rep["layers"] if layer.get("macs_executed")
                and sum(layer["macs_executed"].values()) > sum(layer["macs_dense"].values())]
        lines.append(f"  over 100% in {'/'.join(over)}: the kernels multiply whole SIMD vectors, so a layer with "
                     "fewer outputs than a vector's lanes also multiplies padding lanes"
                     + (f" ({', '.join(wide[:3])})" if wide else ""))
    return lines


def _memory_lines(rep: dict) -> List[str]:
    """Bytes kept for backward: `stored` (values and state bits, plus the position lists of the
    plan) against `dense` (every Conv/Gemm output activation in fp32)."""
    ab = rep.get("activation_bytes") or {}
    if not ab.get("dense"):
        return []
    split = (f" = {_mib(ab['values'])} values and state bits + {_mib(ab['plan'])} non-zero lists"
             if "values" in ab and "plan" in ab else "")
    lines = [f"activation memory kept for backward: {_mib(ab['stored'])} stored{split} vs {_mib(ab['dense'])} "
             f"dense ({_pct(ab['stored'], ab['dense'])})"]
    if ab["stored"] > ab["dense"]:
        why = ("the dense kernels keep every value, plus the state bits and the lists" if rep.get("engine") ==
               "native-dense" else "activations with few zeros keep almost every value, plus the state bits "
               "and the lists")
        values = f" (values and state bits alone {_pct(ab['values'], ab['dense'])})" if "values" in ab else ""
        lines.append(f"  over 100%: {why}{values}; the stored form saves memory only where an activation "
                     "has enough zeros")
    return lines


def _time_line(rep: dict) -> str:
    """Wall time per training step (everything, a device's link included), then where it went."""
    st = rep.get("step_time") or {}
    steps = st.get("steps") or rep.get("steps") or 0
    if not steps:
        return ""
    phase = st.get("phase_ms") or {k: 1e3 * v / steps for k, v in (rep.get("phase_seconds") or {}).items()}
    parts = (f"FP {phase.get('fp', 0):.1f}, BP {phase.get('bp', 0):.1f}, WG {phase.get('wg', 0):.1f}, "
             f"update {phase.get('update', 0):.1f}")
    if st.get("wall_ms") is None:      # a report from before wall time was measured
        return f"time per step: {sum(phase.values()):.1f} ms in the engine ({parts}) over {steps} steps"
    head = f"time per step: {st['wall_ms']:.1f} ms wall over {steps} steps"
    if "link_share" in st:
        return (f"{head}; the device computed {sum(phase.values()):.1f} ms ({parts}), the link and the host's "
                f"encoding took the rest ({100 * st['link_share']:.1f}%)")
    return f"{head} ({parts})"


def layer_table(rep: dict) -> str:
    """The per-layer table: sparsities, MACs dense/required/executed (all phases, `exec` = executed as
    % of dense) and the activation bytes kept for backward (`stored` as % of dense); its totals
    are the summary's figures."""
    head = (f"{'layer':<24} {'act':<9} {'act 0s':>6} {'grad 0s':>7} {'MACs dense':>12} {'required':>12} "
            f"{'executed':>12} {'exec':>6} {'act KiB':>8} {'stored':>7}")
    rows = [head, "-" * len(head)]
    tot = {"dense": 0, "required": 0, "executed": 0, "bd": 0, "bs": 0}
    have_exec = have_bytes = True
    for layer in rep["layers"]:
        dn = sum(layer["macs_dense"].values())
        rq = sum(layer["macs_required"].values())
        ex = layer.get("macs_executed")
        ex = sum(ex.values()) if ex else None
        have_exec &= ex is not None
        ab = layer.get("act_bytes")
        have_bytes &= bool(ab)
        tot["dense"] += dn
        tot["required"] += rq
        tot["executed"] += ex or 0
        tot["bd"] += ab["dense"] if ab else 0
        tot["bs"] += ab["stored"] if ab else 0
        executed = (f"{ex:,}", _pct(ex, dn)) if ex is not None else ("-", "-")
        kept = (f"{ab['dense'] / 1024:.1f}", _pct(ab["stored"], ab["dense"])) if ab else ("-", "-")
        rows.append(f"{layer['name'][:24]:<24} {layer['activation'][:9]:<9} {100 * layer['act_sparsity']:>5.1f}% "
                    f"{100 * layer['grad_sparsity']:>6.1f}% {dn:>12,} {rq:>12,} {executed[0]:>12} {executed[1]:>6} "
                    f"{kept[0]:>8} {kept[1]:>7}")
    rows.append("-" * len(head))
    total_bytes = rep.get("activation_bytes") if not have_bytes else {"dense": tot["bd"], "stored": tot["bs"]}
    ex_total = f"{tot['executed']:,}" if have_exec else "-"
    share = _pct(tot["executed"], tot["dense"]) if have_exec else "-"
    kib = f"{total_bytes['dense'] / 1024:.1f}" if total_bytes else "-"
    stored = _pct(total_bytes["stored"], total_bytes["dense"]) if total_bytes else "-"
    rows.append(f"{'total':<24} {'':<9} {'':>6} {'':>7} {tot['dense']:>12,} {tot['required']:>12,} {ex_total:>12} "
                f"{share:>6} {kib:>8} {stored:>7}")
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
