"""One run per checkpoint folder: an exclusive, non-blocking lock on DIR/.edgetune.lock.

The lock is an flock on an open file, so the kernel drops it when the process dies
(SIGKILL included): a killed run never leaves a stale lock behind, and `--resume`
can take the folder over at once.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

from .errors import UsageError

LOCK_FILE = ".edgetune.lock"


class FolderLock:
    """`with FolderLock(folder):` holds the folder for this process or raises UsageError."""

    def __init__(self, folder: str, option: str = "--checkpoint"):
        self.folder, self.option = folder, option
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd = None
        self._made: Optional[str] = None

    def __enter__(self):
        import fcntl

        if not os.path.isdir(self.folder):
            if os.path.exists(self.folder):
                raise UsageError(f"{self.option} {self.folder}: is a file, not a folder")
            top = os.path.abspath(self.folder)
            while not os.path.exists(os.path.dirname(top)):
                top = os.path.dirname(top)
            os.makedirs(self.folder)
            self._made = top      # the outermost folder this run created
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise UsageError(f"{self.option} {self.folder} is in use by another edgetune run"
                                 f"{f' (pid {holder})' if holder else ''}; wait for it to finish or use "
                                 "another folder") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)   # the previous holder unlinked it between our open and our lock: retry
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is None:
            return
        # unlink while still holding the lock: a later run creates a fresh file
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        if self._made:       # a run that left nothing in the folders it created removes them
            path = os.path.abspath(self.folder)
            while True:
                try:
                    os.rmdir(path)          # only succeeds on an empty folder
                except OSError:
                    break
                if path == self._made:
                    break
                path = os.path.dirname(path)


def _read(fd) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    return ""


def _same_file(fd, path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
