"""`edgetune finetune` option checks: each value on its own, then every pair that cannot be
honoured together (an error naming both options), before anything is loaded."""
from __future__ import annotations

import os

import numpy as np

from .errors import UsageError
from .optim import SCHEDULES
from .selection import KEEP


def check_options(cfg) -> None:
    """Raise UsageError (exit code 2) on the first option that is invalid or conflicts."""
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {cfg.epochs}")
    if not (cfg.lr > 0 and np.isfinite(cfg.lr)):
        raise UsageError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.keep not in KEEP:
        raise UsageError(f"--keep must be one of {', '.join(KEEP)}, got {cfg.keep!r}")
    if cfg.schedule not in SCHEDULES:
        raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if cfg.patience is not None and cfg.patience < 1:
        raise UsageError(f"--patience must be at least 1, got {cfg.patience}")
    if cfg.num_classes is not None and cfg.num_classes < 2:
        raise UsageError(f"--num-classes must be at least 2, got {cfg.num_classes}")
    if cfg.threads is not None and cfg.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {cfg.threads}")
    if cfg.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be 0 or more, got {cfg.checkpoint_every}")
    _check_pairs(cfg)
    for path, what in ((cfg.out, "--out"), (cfg.report, "--report")):
        if path:
            check_output_path(path, what)
    if cfg.checkpoint and os.path.exists(cfg.checkpoint) and not os.path.isdir(cfg.checkpoint):
        raise UsageError(f"--checkpoint {cfg.checkpoint}: is a file, not a folder")
    if cfg.out and cfg.report and os.path.abspath(cfg.out) == os.path.abspath(cfg.report):
        raise UsageError(f"--out and --report are the same file ({cfg.out})")


def _check_pairs(cfg) -> None:
    engine = cfg.engine
    if cfg.device and engine != "device":
        raise UsageError(f"--device {cfg.device} needs --engine device (with --engine {engine} the model would "
                         "train on this computer's CPU, not on the device)")
    if cfg.dense_kernels and engine != "native":
        raise UsageError(f"--dense-kernels applies to --engine native only, not --engine {engine}")
    if cfg.threads and engine != "native":
        why = ("the training steps run on the device" if engine == "device"
               else "the dense engine uses numpy's own threads")
        raise UsageError(f"--threads applies to --engine native only, not --engine {engine} ({why})")
    if cfg.resume and not cfg.checkpoint:
        raise UsageError("--resume needs --checkpoint DIR")
    if cfg.checkpoint_every and not cfg.checkpoint:
        raise UsageError("--checkpoint-every needs --checkpoint DIR")


def check_output_path(path: str, what: str) -> None:
    """A file path whose missing parent folders can be created (when the file is written)."""
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a folder; give a file path")
    folder = os.path.dirname(os.path.abspath(path))
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise UsageError(f"{what} {path}: {probe} is a file, so the folder {folder} cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: folder {probe} is not writable")
