"""Which weights a run ends with: the best validation epoch (default) or the last one,
and when to stop early.

The starting weights are epoch 0, a candidate like any other, so `keep="best"` never
writes a model that validates worse than the one it started from. "Best" is the
highest validation accuracy, ties broken by the lower validation loss.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

KEEP = ("best", "last")


class BestEpoch:
    """Tracks the best epoch (and holds its weights when keep="best"); `observe` says when to stop."""

    def __init__(self, keep: str = "best", patience: Optional[int] = None):
        if keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(KEEP)}, got {keep!r}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.keep, self.patience = keep, patience
        self.best_epoch = -1
        self.best_acc = -np.inf
        self.best_loss = np.inf
        self.since_best = 0
        self.params: Optional[Dict[str, np.ndarray]] = None

    def _better(self, acc: float, loss: float) -> bool:
        return acc > self.best_acc or (acc == self.best_acc and loss < self.best_loss)

    def start(self, engine, val_acc: float, val_loss: float) -> None:
        """Epoch 0: the weights before any training step."""
        self._take(engine, 0, val_acc, val_loss)

    def observe(self, engine, entry: dict) -> bool:
        """Record an epoch's history entry (needs val_acc, val_loss); True when patience ran out."""
        if self._better(entry["val_acc"], entry["val_loss"]):
            self._take(engine, entry["epoch"], entry["val_acc"], entry["val_loss"])
            entry["best"] = True
        else:
            self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def _take(self, engine, epoch, acc, loss) -> None:
        self.best_epoch, self.best_acc, self.best_loss, self.since_best = epoch, acc, loss, 0
        if self.keep == "best":
            self.params = engine.get_params()

    def restore(self, engine) -> bool:
        """Load the kept weights into the engine when keep="best"; True if that changed them."""
        if self.keep != "best" or self.params is None:
            return False
        engine.set_params(self.params)
        return True

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-safe scalars (the weights travel separately, see `arrays`)."""
        return {"keep": self.keep, "patience": self.patience, "best_epoch": self.best_epoch,
                "best_acc": float(self.best_acc), "best_loss": float(self.best_loss),
                "since_best": self.since_best}

    def arrays(self) -> Dict[str, np.ndarray]:
        return dict(self.params or {})

    def load_state_dict(self, state: dict, arrays: Dict[str, np.ndarray]) -> None:
        self.best_epoch, self.since_best = int(state["best_epoch"]), int(state["since_best"])
        self.best_acc, self.best_loss = float(state["best_acc"]), float(state["best_loss"])
        self.params = {k: np.array(v, np.float32) for k, v in arrays.items()} if arrays else None
