"""Atomic file output: write a temporary file beside the target, fsync, rename.

The result gets the mode a newly created file gets (0666 minus the umask, usually
0644); the temporary file itself is private (0600) until it is complete. Missing
parent folders are created.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def target_mode() -> int:
    """The permission bits a new file gets: 0666 & ~umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Yield a file object; the target appears complete on success and untouched on failure."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    perms = target_mode()
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), perms)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            # a write or fsync on the open file names none: say which file could not be written
            # (error: out.onnx: No space left on device)
            raise OSError(exc.errno, exc.strerror or str(exc), path) from None
        raise


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically (atomic_write)."""
    with atomic_write(path) as f:
        f.write(data)


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
