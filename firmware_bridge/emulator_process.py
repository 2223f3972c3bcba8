"""`edgetune emulator --pty` as a child process, for `--device emulator`: the host then opens the
pseudo-terminal exactly as it opens a board."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
from typing import Optional

from .errors import DeviceError

START_TIMEOUT = 30.0     # for the first stdout line (PROTOCOL.md section 9)


class EmulatorProcess:
    """The emulator as a child; `path` is the device path it printed on its first stdout line."""

    def __init__(self, fault_rate=0.0, fmt="fp32", reset_after=None, seed=0, engine=None,
                 tcp: Optional[str] = None, start_timeout: float = START_TIMEOUT):
        cmd = [sys.executable, "-m", "edgetune.firmware_bridge.emulator", "--exit-with-parent",
               "--fault-rate", str(fault_rate), "--format", fmt, "--seed", str(seed)]
        cmd += ["--tcp", tcp] if tcp else ["--pty"]
        if reset_after:
            cmd += ["--reset-after", str(int(reset_after))]
        if engine:
            cmd += ["--engine", engine]
        self.log = tempfile.NamedTemporaryFile(prefix="edgetune-emulator-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        r, _, _ = select.select([self.proc.stdout], [], [], start_timeout)
        line = self.proc.stdout.readline().decode().strip() if r else ""
        if not line:
            self.close()
            raise DeviceError(f"the emulator did not start within {start_timeout:.0f} s: {self.log_tail()}")
        self.path = line

    def log_tail(self, n: int = 3) -> str:
        """The last lines the emulator wrote to stderr, joined (for error messages)."""
        try:
            with open(self.log.name, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the emulator (SIGTERM, then SIGKILL after 5 s) and remove its log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass
