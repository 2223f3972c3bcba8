"""`edgetune report --plot OUT.png`: loss and accuracy per epoch, per-layer sparsity and MAC
savings, from a report JSON. matplotlib is an optional extra: pip install ".[plots]"."""
from __future__ import annotations

import os

from .errors import UsageError

PLOTS_HINT = 'plotting needs matplotlib: pip install ".[plots]" in the edgetune checkout (or pip install matplotlib)'


def plot_report(rep: dict, path: str) -> None:
    """Draw the four panels into `path` (PNG, PDF or SVG by its extension), written atomically."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(PLOTS_HINT) from None
    matplotlib.use("Agg")     # no display on an edge device or in CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .atomic import atomic_write

    ext = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    if ext not in ("png", "pdf", "svg"):
        raise UsageError(f"--plot {path}: give a .png, .pdf or .svg file")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    try:
        _curves(axes[0][0], axes[0][1], rep)
        for ax in axes[0]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _layers(axes[1][0], axes[1][1], rep)
        fig.suptitle(f"{rep['model']} on {rep.get('data')} ({rep['engine']} engine): val acc "
                     f"{100 * rep['before']['val_acc']:.1f}% -> {100 * rep['after']['val_acc']:.1f}%")
        fig.tight_layout()
        with atomic_write(path) as f:
            fig.savefig(f, format=ext, dpi=110)
    finally:
        plt.close(fig)


def _curves(ax_loss, ax_acc, rep) -> None:
    hist = rep["history"]
    epochs = [h["epoch"] for h in hist]
    ax_loss.plot(epochs, [h["loss"] for h in hist], "o-", label="train loss")
    if all("val_loss" in h for h in hist):
        ax_loss.plot(epochs, [h["val_loss"] for h in hist], "s--", label="val loss")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    ax_loss.legend()
    ax_acc.plot([0] + epochs, [None] + [100 * h["train_acc"] for h in hist], "o-", label="train")
    ax_acc.plot([0] + epochs, [100 * rep["before"]["val_acc"]] + [100 * h.get("val_acc", 0) for h in hist],
                "s--", label="val")
    kept = (rep.get("selected") or {}).get("epoch")
    if kept is not None:
        ax_acc.axvline(kept, color="grey", lw=0.8, ls=":", label=f"kept (epoch {kept})")
    ax_acc.set(xlabel="epoch (0 = before)", ylabel="accuracy %", title="accuracy per epoch")
    ax_acc.legend()


def _layers(ax_sp, ax_macs, rep) -> None:
    layers = rep["layers"]
    idx = list(range(len(layers)))
    names = [f"{i}:{layer['name'][-14:]}" for i, layer in enumerate(layers)]
    w = 0.4
    ax_sp.bar([i - w / 2 for i in idx], [100 * layer["act_sparsity"] for layer in layers], w, label="activation")
    ax_sp.bar([i + w / 2 for i in idx], [100 * layer["grad_sparsity"] for layer in layers], w, label="error")
    ax_sp.set(ylabel="zeros %", title="sparsity per layer", ylim=(0, 100))
    ax_sp.set_xticks(idx, names, rotation=60, ha="right", fontsize=7)
    ax_sp.legend()
    saved_req = [_saved(layer["macs_dense"], layer["macs_required"]) for layer in layers]
    ax_macs.bar([i - w / 2 for i in idx], saved_req, w, label="the constraints allow")
    if all(layer.get("macs_executed") for layer in layers):
        ax_macs.bar([i + w / 2 for i in idx], [_saved(layer["macs_dense"], layer["macs_executed"])
                                               for layer in layers], w, label="the kernels skipped")
    ax_macs.set(ylabel="MACs saved %", title="MAC savings per layer (FP+BP+WG)", ylim=(0, 100))
    ax_macs.set_xticks(idx, names, rotation=60, ha="right", fontsize=7)
    ax_macs.legend()


def _saved(dense: dict, other: dict) -> float:
    d = sum(dense.values())
    return 100.0 * (d - sum(other.values())) / d if d else 0.0
