"""Losses with their gradients, following torch's defaults (mean reduction)."""
from __future__ import annotations

import numpy as np

LOSSES = ("cross_entropy", "mse")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss_and_grad(name: str, logits: np.ndarray, y: np.ndarray):
    """Return (mean loss, dLoss/dlogits) for a batch of logits (N, C); the gradient is float32,
    or float64 for float64 logits (the dense engine run as a float64 reference)."""
    out = np.float64 if logits.dtype == np.float64 else np.float32
    logits = logits.astype(out, copy=False)
    n = logits.shape[0]
    if name == "cross_entropy":
        logp = log_softmax(logits.astype(np.float64))
        loss = -logp[np.arange(n), y].mean()
        grad = np.exp(logp)
        grad[np.arange(n), y] -= 1.0
        return float(loss), (grad / n).astype(out)
    if name == "mse":
        target = one_hot(y, logits.shape[1]) if y.ndim == 1 else y.astype(np.float32)
        diff = logits.astype(np.float64) - target
        return float((diff ** 2).mean()), (2.0 * diff / diff.size).astype(out)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    """Integer labels to a float32 one-hot matrix."""
    out = np.zeros((len(y), classes), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


def count_correct(logits: np.ndarray, y: np.ndarray) -> int:
    """How many argmax predictions match the labels (class labels only)."""
    labels = y if y.ndim == 1 else y.argmax(axis=1)
    return int((logits.argmax(axis=1) == labels).sum())
