"""`edgetune finetune` option checks: each value on its own, then every pair that cannot be
honoured together (an error naming both options), then every output path, before anything is
loaded (so a run never trains for minutes and then fails on where to write)."""
from __future__ import annotations

import os
import tempfile

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
    outputs = [(path, what) for path, what in ((cfg.out, "--out"), (cfg.report, "--report")) if path]
    for path, what in outputs:
        check_output_path(path, what)
    if cfg.checkpoint:
        check_output_folder(cfg.checkpoint, "--checkpoint")
        outputs.append((cfg.checkpoint, "--checkpoint"))
    for i, (path, what) in enumerate(outputs):
        for other, other_what in outputs[i + 1:]:
            if os.path.abspath(path) == os.path.abspath(other):
                raise UsageError(f"{what} and {other_what} are the same path ({path})")
    if cfg.resume:
        check_resume(cfg.checkpoint)


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


def check_resume(folder: str) -> None:
    """--resume with no checkpoint to resume from is an error (like Hugging Face's
    resume_from_checkpoint): a mistyped folder must not silently start the run over."""
    from .checkpoint import FILE

    if not os.path.isdir(folder):
        raise UsageError(f"--resume: the checkpoint folder {folder} does not exist; check the path, or leave out "
                         "--resume to start a new run")
    if not os.path.isfile(os.path.join(folder, FILE)):
        raise UsageError(f"--resume: no checkpoint in {folder} (no {FILE}); check the path, or leave out --resume "
                         "to start a new run there")


def check_output_path(path: str, what: str) -> None:
    """A file that can be written at `path`: not a folder or a device, in a folder that exists and
    takes new files, or that can be created (missing parent folders are created when the file is
    written). Raise UsageError naming `what` (the option) otherwise."""
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a folder; give a file path")
    if os.path.lexists(path) and not os.path.isfile(path):
        # the atomic rename would replace a device node, a FIFO or a socket with a plain file
        raise UsageError(f"{what} {path}: exists and is not a regular file")
    _check_can_write_in(os.path.dirname(os.path.abspath(path)), what, path)


def check_output_folder(folder: str, what: str) -> None:
    """A folder that exists and takes new files, or that can be created."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{what} {folder}: is a file, not a folder")
    _check_can_write_in(os.path.abspath(folder), what, folder)


def _check_can_write_in(folder: str, what: str, path: str) -> None:
    """Try it: create (and remove) a file in `folder`, or, when it is missing, a folder in its
    deepest existing ancestor. Permission bits alone do not tell (root passes every access()
    check, /proc refuses every new name), and a failed run must leave no folder behind."""
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise UsageError(f"{what} {path}: {probe} is a file, so the folder {folder} cannot be created")
    try:
        if probe == folder:
            fd, tmp = tempfile.mkstemp(prefix=".edgetune-probe-", dir=folder)
            os.close(fd)
            os.unlink(tmp)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".edgetune-probe-", dir=probe))
    except OSError as exc:
        doing = "write a file in" if probe == folder else f"create the folder {folder} in"
        raise UsageError(f"{what} {path}: cannot {doing} {probe} ({exc.strerror or exc})") from None
