"""Issue 12, item 6: terminal behaviour. The progress line under a real pseudo-terminal (steps,
ETA, running loss; erased before the epoch line; the cursor never hidden), -q before and after
the subcommand, --version and --threads."""
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from importlib.metadata import version

import pytest

from helpers import run_cli

PROGRESS = re.compile(r"epoch (\d)/(\d) \[[#.]+\] (\d+)/19 steps  (ETA \S+|\S+)  loss (\d+\.\d{4})")


def _run_in_pty(*args, timeout=180):
    """Run the CLI with stdin/stdout/stderr on one pty (as in a terminal); returns (rc, text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.runtime.cli", *map(str, args)],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:      # EIO: the child closed the pty
                break
            if not chunk:
                break
            out += chunk
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, out.decode(errors="replace")


def _starts_a_line(text, needle):
    """Every occurrence of `needle` sits at column 0: after a newline or an erased line."""
    pos = [m.start() for m in re.finditer(re.escape(needle), text)]
    assert pos, needle
    return all(text[:p].endswith(("\n", "\r\x1b[K")) for p in pos)


def test_progress_line_in_a_terminal(tmp_path):
    rc, text = _run_in_pty("finetune", "--epochs", "2", "--out", tmp_path / "o.onnx")
    assert rc == 0, text
    bars = PROGRESS.findall(text)
    assert {b[0] for b in bars} == {"1", "2"}, text          # a progress line in every epoch
    assert any(b[3].startswith("ETA ") for b in bars)        # an ETA while the epoch runs
    assert any(int(b[2]) == 19 for b in bars)                 # and the finished count
    assert all(0 < float(b[4]) < 10 for b in bars)           # the running loss
    assert _starts_a_line(text, "epoch 1/2  loss") and _starts_a_line(text, "epoch 2/2  loss")
    assert "\x1b[?25l" not in text                           # the cursor is never hidden
    assert _starts_a_line(text, "val acc 72.3% -> ")


def test_an_error_mid_epoch_starts_its_own_line(tmp_path):
    rc, text = _run_in_pty("finetune", "--epochs", "1", "--lr", "1e38", "--out", tmp_path / "o.onnx")
    assert rc == 1
    assert _starts_a_line(text, "error: training diverged")
    assert "\x1b[?25l" not in text and not (tmp_path / "o.onnx").exists()


def test_no_progress_line_when_not_a_terminal(tmp_path):
    result = run_cli("finetune", "--epochs", "1", "--out", tmp_path / "o.onnx")
    assert result.exit_code == 0
    assert "\r" not in result.output and "steps  " not in result.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_prints_only_the_result_line(tmp_path, where):
    args = ["finetune", "--epochs", "1", "--out", tmp_path / "o.onnx"]
    args = ["-q"] + args if where == "before" else args + ["-q"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"val acc 72\.3% -> \d+\.\d%; wrote .*", lines[0]), lines
    assert result.stderr == ""


def test_quiet_eval_prints_only_the_result_line(tmp_path):
    assert run_cli("finetune", "-q", "--epochs", "1", "--out", tmp_path / "o.onnx").exit_code == 0
    result = run_cli("eval", tmp_path / "o.onnx", "--data", "digits_shifted", "-q")
    lines = result.stdout.strip().splitlines()
    assert result.exit_code == 0 and len(lines) == 1 and "accuracy" in lines[0]


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"edgetune {version('edgetune')}"


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_sets_the_native_kernel_threads(tmp_path, threads):
    # a subprocess: the kernels' thread count is process-wide
    rep = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "edgetune.runtime.cli", "-q", "finetune", "--epochs", "1",
                           "--threads", str(threads), "--out", str(tmp_path / "o.onnx"), "--report", str(rep)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(rep.read_text())["threads"] == threads


def test_eval_threads(tmp_path):
    assert run_cli("finetune", "-q", "--epochs", "1", "--out", tmp_path / "o.onnx").exit_code == 0
    one = run_cli("eval", tmp_path / "o.onnx", "--data", "digits_shifted", "--threads", "1")
    two = run_cli("eval", tmp_path / "o.onnx", "--data", "digits_shifted", "--threads", "2")
    assert one.exit_code == two.exit_code == 0
    assert one.output.splitlines()[-1] == two.output.splitlines()[-1]
    bad = run_cli("eval", tmp_path / "o.onnx", "--data", "digits_shifted", "--threads", "0")
    assert bad.exit_code == 2 and "--threads must be at least 1" in bad.output


class _PlainBar:
    """The minimal progress protocol: update(n) and finish()."""

    def __init__(self):
        self.updates, self.losses, self.finished = 0, [], False

    def update(self, n=1):
        self.updates += n

    def finish(self):
        self.finished = True


class _Recorder(_PlainBar):
    def set_loss(self, value):
        self.losses.append(value)


class _StepEngine:
    """Loss i+1 at step i; fails at step `fail`."""

    def __init__(self, fail=None):
        self.i, self.fail = 0, fail

    def train_step(self, x, y):
        from edgetune.runtime.engines.base import StepResult

        if self.i == self.fail:
            raise RuntimeError("step failed")
        self.i += 1
        return StepResult(loss=float(self.i), correct=0, batch=len(x))


def test_local_fit_reports_the_running_loss_and_finishes_the_bar_on_failure():
    import numpy as np

    from edgetune.runtime.trainer import local_fit, new_fit_state

    x, y = np.zeros((8, 1)), np.zeros(8, np.int64)
    bars = []
    local_fit(_StepEngine(), x, y, epochs=1, batch_size=2, state=new_fit_state(0),
              progress=lambda steps, e, n: bars.append(_Recorder()) or bars[-1])
    assert bars[0].losses == [1.0, 1.5, 2.0, 2.5] and bars[0].updates == 4 and bars[0].finished
    bars.clear()
    with pytest.raises(RuntimeError):
        local_fit(_StepEngine(fail=2), x, y, epochs=1, batch_size=2, state=new_fit_state(0),
                  progress=lambda steps, e, n: bars.append(_PlainBar()) or bars[-1])
    assert bars[0].updates == 2 and bars[0].finished     # a bar without set_loss works too


def test_progress_line_text():
    import io

    from edgetune.runtime.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(10, "epoch 1/3", stream)
    bar.t0 -= 4.0                       # four seconds into the epoch
    bar.done = 4
    bar.set_loss(0.12345)
    assert re.fullmatch(r"epoch 1/3 \[#+\.+\] 4/10 steps  ETA 6\.0s  loss 0\.1235", bar.line(bar.t0 + 4.0))
    bar.update(6)
    assert stream.getvalue().startswith("\r\x1b[K") and "10/10 steps" in stream.getvalue()
    bar.finish()
    assert stream.getvalue().endswith("\r\x1b[K")
