"""`edgetune report --plot OUT.png`: loss and accuracy per epoch, per-layer sparsity and executed
MACs, from a finetune report; loss and accuracy per round from a fleet report. matplotlib is an
optional extra: pip install ".[plots]"."""
from __future__ import annotations

import os
from typing import List

from .errors import UsageError

PLOTS_HINT = 'plotting needs matplotlib: pip install ".[plots]" in the edgetune checkout (or pip install matplotlib)'
LOG_SCALE_RANGE = 10.0      # a loss curve spanning more than this factor is drawn on a log scale
OP_SUFFIXES = {"Conv", "Gemm", "MatMul"}
LABEL_FONT = 9              # per-layer labels: matplotlib's default 10 less a point, never the 7 that could not be read


def plot_report(rep: dict, path: str) -> None:
    """Draw the report into `path` (PNG, PDF or SVG by its extension), written atomically."""
    from .atomic import atomic_write

    ext = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    if ext not in ("png", "pdf", "svg"):
        raise UsageError(f"--plot {path}: give a .png, .pdf or .svg file")
    fig = figure(rep)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format=ext, dpi=110)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def figure(rep: dict):
    """The matplotlib figure of a finetune report (four panels) or of a fleet report (two)."""
    from .report import is_fleet_report

    try:
        import matplotlib
    except ImportError:
        raise UsageError(PLOTS_HINT) from None
    matplotlib.use("Agg")     # no display on an edge device or in CI
    import matplotlib.pyplot as plt

    if is_fleet_report(rep):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        _fleet(fig, axes, rep)
    else:
        width = max(11.0, 5.0 + 0.6 * len(rep["layers"]))       # room for every layer's label
        fig, axes = plt.subplots(2, 2, figsize=(width, 8))
        _finetune(fig, axes, rep)
    fig.tight_layout()
    return fig


def _finetune(fig, axes, rep) -> None:
    hist = rep["history"]
    epochs = [h["epoch"] for h in hist]
    _loss(axes[0][0], epochs, {"train loss": [h["loss"] for h in hist],
                               "val loss": [h["val_loss"] for h in hist] if all("val_loss" in h for h in hist)
                               else None}, "epoch")
    ax_acc = axes[0][1]
    ax_acc.plot([0] + epochs, [None] + [100 * h["train_acc"] for h in hist], "o-", label="train")
    ax_acc.plot([0] + epochs, [100 * rep["before"]["val_acc"]] + [100 * h.get("val_acc", 0) for h in hist],
                "s--", label="val")
    kept = (rep.get("selected") or {}).get("epoch")
    if kept is not None:
        ax_acc.axvline(kept, color="grey", lw=0.8, ls=":", label=f"kept (epoch {kept})")
    ax_acc.set(xlabel="epoch (0 = before)", ylabel="accuracy %", title="accuracy per epoch")
    _integer_axis(ax_acc, 0, max(epochs, default=0))
    ax_acc.legend()
    _layers(axes[1][0], axes[1][1], rep)
    fig.suptitle(f"{rep['model']} on {rep.get('data')} ({rep['engine']} engine): val acc "
                 f"{100 * rep['before']['val_acc']:.1f}% -> {100 * rep['after']['val_acc']:.1f}%")


def _fleet(fig, axes, rep) -> None:
    rounds = rep["rounds"]
    numbers = [r["round"] for r in rounds]
    _loss(axes[0], numbers, {"train loss (nodes)": [r.get("train_loss") for r in rounds],
                             "val loss (server)": [r.get("val_loss") for r in rounds]}, "round")
    ax = axes[1]
    ax.plot([0] + numbers, [100 * rep["before"]["val_acc"]] + [100 * r["val_acc"] for r in rounds], "s--",
            label="val (server)")
    if all(r.get("nodes_val_acc") is not None for r in rounds):
        ax.plot(numbers, [100 * r["nodes_val_acc"] for r in rounds], "o-", label="val (nodes' own data)")
    ax.set(xlabel="round (0 = before)", ylabel="accuracy %", title="accuracy per round")
    _integer_axis(ax, 0, max(numbers, default=0))
    ax.legend()
    st = rep.get("settings") or {}
    fig.suptitle(f"{rep['model']} on {rep.get('data')}: fleet of {st.get('min-nodes', '?')} nodes, "
                 f"{st.get('strategy', '?')}; val acc {100 * rep['before']['val_acc']:.1f}% -> "
                 f"{100 * rep['after']['val_acc']:.1f}%")


def _loss(ax, xs, curves: dict, unit: str) -> None:
    """Loss curves; a log scale (said in the title and the axis label) when they span more than
    LOG_SCALE_RANGE, so that a first-epoch spike does not flatten the rest."""
    values = [v for ys in curves.values() if ys for v in ys if v is not None]
    for (label, ys), style in zip(curves.items(), ("o-", "s--")):
        if ys and any(v is not None for v in ys):
            ax.plot(xs, ys, style, label=label)
    title, ylabel = f"loss per {unit}", "loss"
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) > LOG_SCALE_RANGE * min(positive):
        ax.set_yscale("log")
        _plain_log_labels(ax)
        span = max(positive) / min(positive)
        title, ylabel = f"loss per {unit} (log scale: the values span {span:.0f}x)", "loss (log scale)"
    ax.set(xlabel=unit, ylabel=ylabel, title=title)
    _integer_axis(ax, min(xs, default=1), max(xs, default=1))
    ax.legend()


def _plain_log_labels(ax) -> None:
    """Label a log axis in plain numbers, at the powers of ten and at their 2x and 5x."""
    import math

    from matplotlib.ticker import FuncFormatter

    def label(v, _pos):
        if v <= 0:
            return ""
        lead = round(v / 10 ** math.floor(math.log10(v)), 6)
        return f"{v:g}" if lead in (1, 2, 5) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))


def _integer_axis(ax, first: int, last: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(first - 0.5, last + 0.5)     # a single epoch sits in the middle, not at 0.945..1.05
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def layer_labels(names: List[str]) -> List[str]:
    """Short, distinct per-layer labels: the index and the layer's own path component, without the
    exporter's op suffix ("/features/features.6/Conv" -> "2 features.6")."""
    parts = []
    for name in names:
        comps = [c for c in name.split("/") if c]
        if len(comps) > 1 and comps[-1] in OP_SUFFIXES:
            comps = comps[:-1]
        parts.append(comps or [name])
    short = [c[-1] for c in parts]
    if len(set(short)) < len(short):
        short = ["/".join(c) for c in parts]
    return [f"{i} {s[-18:]}" for i, s in enumerate(short)]


def _layers(ax_sp, ax_macs, rep) -> None:
    layers = rep["layers"]
    idx = list(range(len(layers)))
    labels = layer_labels([layer["name"] for layer in layers])
    w = 0.4
    ax_sp.bar([i - w / 2 for i in idx], [100 * layer["act_sparsity"] for layer in layers], w, label="activation")
    ax_sp.bar([i + w / 2 for i in idx], [100 * layer["grad_sparsity"] for layer in layers], w, label="error")
    ax_sp.set(ylabel="zeros %", title="sparsity per layer", ylim=(0, 100))
    ax_sp.legend()
    required = [_share(layer["macs_required"], layer["macs_dense"]) for layer in layers]
    ax_macs.bar([i - w / 2 for i in idx], required, w, label="the constraints require")
    top = max(required, default=100)
    if all(layer.get("macs_executed") for layer in layers):
        executed = [_share(layer["macs_executed"], layer["macs_dense"]) for layer in layers]
        who = {"device": "the device executed (its last step)", "dense": "the dense engine executed",
               "native-dense": "the dense kernels executed"}.get(rep["engine"], "the kernels executed")
        ax_macs.bar([i + w / 2 for i in idx], executed, w, label=who)
        top = max(top, max(executed, default=100))
    else:
        ax_macs.text(0.5, 0.5, f"the {rep['engine']} engine reported no per-layer counts", ha="center",
                     transform=ax_macs.transAxes, color="grey")
    ax_macs.axhline(100, color="grey", lw=0.8, ls=":", label="dense")
    ax_macs.set(ylabel="% of dense MACs", title="MACs per layer, % of dense (FP+BP+WG; lower is better)",
                ylim=(0, max(105.0, top * 1.08)))
    ax_macs.legend(fontsize=8)
    for ax in (ax_sp, ax_macs):
        ax.set_xticks(idx)
        ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=LABEL_FONT)


def _share(part: dict, dense: dict) -> float:
    d = sum(dense.values())
    return 100.0 * sum(part.values()) / d if d else 0.0
