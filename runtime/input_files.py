"""Input files are regular files: a FIFO, a device or a socket given as a model, a data file or
an image would block a reader forever (a FIFO with no writer) or never end (/dev/zero), so every
loader checks the type with stat before it opens anything."""
from __future__ import annotations

import os
import stat

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def not_regular(path: str):
    """None for a regular file (symlinks followed), else what `path` is ('a FIFO (named pipe)', ...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc.strerror or "unreadable"
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_file_size(path: str, error, what: str) -> int:
    """The size of `path`, or `error` (an EdgetuneError class) naming what it is instead of a
    regular file, or that it is larger than the 2 GiB any input of edgetune may be."""
    kind = not_regular(path)
    if kind is not None:
        raise error(f"{path}: is {kind}, not a regular {what} file" if kind.startswith("a ")
                    else f"{path}: {kind}")
    size = os.stat(path).st_size
    if size > MAX_INPUT_BYTES:
        raise error(f"{path}: {size:,} bytes; a {what} file may be at most {MAX_INPUT_BYTES:,} bytes")
    return size


MAX_INPUT_BYTES = 1 << 31   # protobuf's own limit for a model; far above any data edgetune loads
