"""Split one dataset into the per-node shards of a simulated fleet (no Flower imports).

`iid` deals a seeded permutation out in near-equal shards. `dirichlet:ALPHA` gives each
class's samples to the nodes in proportions drawn from Dirichlet(ALPHA): small ALPHA makes
each node see few classes (the label skew of real fleets), large ALPHA approaches iid.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from edgetune.runtime.errors import DataError, UsageError

# Redraws a Dirichlet split gets before it gives up on leaving every node at least `min_size` samples.
MAX_DRAWS = 100


def parse_partition(spec: str) -> Tuple[str, float]:
    """'iid' -> ('iid', 0.0); 'dirichlet:ALPHA' -> ('dirichlet', ALPHA), with a clear error otherwise."""
    if spec == "iid":
        return "iid", 0.0
    if spec.startswith("dirichlet:"):
        try:
            alpha = float(spec.split(":", 1)[1])
        except ValueError:
            raise UsageError(f"--partition {spec!r}: ALPHA must be a number, e.g. dirichlet:0.5") from None
        if not (alpha > 0 and np.isfinite(alpha)):
            raise UsageError(f"--partition {spec!r}: ALPHA must be a positive number")
        return "dirichlet", alpha
    raise UsageError(f"--partition must be 'iid' or 'dirichlet:ALPHA', got {spec!r}")


def partition_indices(labels: np.ndarray, num_parts: int, spec: str, seed: int = 0,
                      min_size: int = 1) -> List[np.ndarray]:
    """Indices into `labels` for each of `num_parts` nodes: disjoint, together all of them, sorted.

    Raises DataError when the data cannot give every node `min_size` samples.
    """
    return _split(labels, None, num_parts, spec, seed, min_size)[0]


def shard(labels: np.ndarray, val_labels: np.ndarray, node: int, num_parts: int, spec: str,
          seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of node `node`. Under `dirichlet` the validation split
    follows the same per-node class proportions as the training split, so a node's local
    evaluation sees its own label mix."""
    if not 0 <= node < num_parts:
        raise UsageError(f"partition id {node} is outside 0..{num_parts - 1}")
    train, val = _split(labels, val_labels, num_parts, spec, seed, 1)
    return train[node], val[node]


def _split(labels, val_labels, num_parts, spec, seed, min_size):
    kind, alpha = parse_partition(spec)
    labels = np.asarray(labels)
    n = len(labels)
    if num_parts < 1:
        raise UsageError(f"the number of nodes must be at least 1, got {num_parts}")
    if n < num_parts * min_size:
        raise DataError(f"{n} samples cannot give {num_parts} nodes {min_size} sample(s) each")
    rng = np.random.default_rng(seed)
    if kind == "iid":
        train = [np.sort(p) for p in np.array_split(rng.permutation(n), num_parts)]
        val = (None if val_labels is None else
               [np.sort(p) for p in np.array_split(rng.permutation(len(val_labels)), num_parts)])
        return train, val
    classes = np.unique(labels if val_labels is None else np.concatenate([labels, val_labels]))
    for _ in range(MAX_DRAWS):
        # one row of node shares per class, used for both splits
        shares = rng.dirichlet(np.full(num_parts, alpha), size=len(classes))
        train = _by_shares(labels, classes, shares, rng)
        if min(len(p) for p in train) >= min_size:
            return train, None if val_labels is None else _by_shares(np.asarray(val_labels), classes, shares, rng)
    raise DataError(f"partition {spec}: after {MAX_DRAWS} draws some node still had fewer than {min_size} "
                    f"samples ({n} samples, {num_parts} nodes); use a larger ALPHA or fewer nodes")


def _by_shares(labels, classes, shares, rng) -> List[np.ndarray]:
    pieces: List[List[np.ndarray]] = [[] for _ in range(shares.shape[1])]
    for c, row in zip(classes, shares):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(row)[:-1] * len(idx)).astype(int)
        for node, piece in enumerate(np.split(idx, cuts)):
            pieces[node].append(piece)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in pieces]
