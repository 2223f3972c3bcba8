"""Checkpoints: parameters, optimizer state, RNG state and the position in the data order,
written atomically so a crash at any instant leaves the previous checkpoint usable."""
from __future__ import annotations

import io
import json
import os
from typing import Optional

import numpy as np

from .atomic import atomic_write
from .errors import EdgetuneError
from .testhooks import armed, crash_point

FILE = "checkpoint.npz"
_saves = 0      # checkpoints written by this process (the tests' crash point counts them)


def save(folder: str, params: dict, opt_state: dict, meta: dict, best: Optional[dict] = None) -> str:
    """Write DIR/checkpoint.npz atomically. `meta` is JSON-serialisable; `best` holds the
    weights of the best epoch so far (see selection.BestEpoch), when they are kept."""
    os.makedirs(folder, exist_ok=True)
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"best/{k}": v for k, v in (best or {}).items()})
    for key, value in opt_state.items():
        if isinstance(value, dict):
            arrays.update({f"opt/{key}/{k}": v for k, v in value.items()})
        else:
            meta = {**meta, f"opt_scalar/{key}": value}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = os.path.join(folder, FILE)
    _remove_stale_temporaries(folder)
    global _saves
    _saves += 1
    with atomic_write(path) as f:
        if armed("checkpoint"):     # tests only: die with half the file written
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            data = buf.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            crash_point("checkpoint", _saves)
            f.write(data[len(data) // 2:])
        else:
            np.savez(f, **arrays)
    return path


def _remove_stale_temporaries(folder: str) -> None:
    """Drop temporary files a killed run left mid-write (atomic_write's .tmp-*checkpoint.npz). The
    folder lock (run_lock) means no other run is writing one now."""
    for name in os.listdir(folder):
        if name.startswith(".tmp-") and name.endswith(FILE):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def load(folder: str) -> Optional[dict]:
    """Return {'params', 'opt_state', 'meta', 'best'} or None when there is no checkpoint yet."""
    path = os.path.join(folder, FILE)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except Exception as exc:
        raise EdgetuneError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    best = {k[5:]: v for k, v in arrays.items() if k.startswith("best/")}
    opt: dict = {}
    for k, v in arrays.items():
        if k.startswith("opt/"):
            _, group, name = k.split("/", 2)
            opt.setdefault(group, {})[name] = v
    for k in list(meta):
        if k.startswith("opt_scalar/"):
            opt[k[len("opt_scalar/"):]] = meta.pop(k)
    return {"params": params, "opt_state": opt, "meta": meta, "best": best}
