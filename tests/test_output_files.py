"""Issue 12, item 8: files and runs. Outputs get the umask's mode (still written atomically),
missing parent folders are created for every output, and a checkpoint folder serves one run at
a time (the lock dies with its process, SIGKILL included)."""
import os
import signal
import subprocess
import sys

import pytest

from helpers import digits_like, run_cli
from edgetune.runtime.atomic import atomic_write
from edgetune.runtime.run_lock import FolderLock


def _mode(path):
    return os.stat(path).st_mode & 0o777


@pytest.mark.parametrize("umask,want", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, umask, want):
    out, rep, ck = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "ck"
    old = os.umask(umask)
    try:
        result = run_cli("finetune", "--epochs", "1", "--out", out, "--report", rep, "--checkpoint", ck)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for path in (out, rep, ck / "checkpoint.npz"):
        assert _mode(path) == want, (path, oct(_mode(path)))
    assert sorted(os.listdir(ck)) == ["checkpoint.npz"]      # no temporary or lock file left behind


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path / "sub") == []


def test_missing_parent_folders_are_created_for_every_output(tmp_path):
    out, rep = tmp_path / "a" / "b" / "o.onnx", tmp_path / "c" / "r.json"
    result = run_cli("finetune", "--epochs", "1", "--out", out, "--report", rep, "--checkpoint", tmp_path / "d" / "ck")
    assert result.exit_code == 0, result.output
    assert out.exists() and rep.exists() and (tmp_path / "d" / "ck" / "checkpoint.npz").exists()


def test_a_failed_run_creates_no_folders(tmp_path):
    bad = digits_like(tmp_path / "bad.npz", shape=(1, 9, 9))
    before = set(os.listdir(tmp_path))
    result = run_cli("finetune", "--data", bad, "--out", tmp_path / "new" / "o.onnx",
                     "--report", tmp_path / "rep" / "r.json", "--checkpoint", tmp_path / "ck")
    assert result.exit_code == 1
    diverged = run_cli("finetune", "--epochs", "1", "--lr", "1e38", "--out", tmp_path / "new" / "o.onnx",
                       "--checkpoint", tmp_path / "runs" / "a" / "ck")
    assert diverged.exit_code == 1 and "training diverged" in diverged.output
    assert set(os.listdir(tmp_path)) == before


def test_a_second_run_on_the_same_checkpoint_folder_is_refused(tmp_path):
    ck = tmp_path / "ck"
    with FolderLock(str(ck)):
        result = run_cli("finetune", "--epochs", "1", "--checkpoint", ck, "--out", tmp_path / "o.onnx")
    assert result.exit_code == 2, result.output
    (err,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert f"--checkpoint {ck} is in use by another edgetune run (pid {os.getpid()})" in err
    assert not (tmp_path / "o.onnx").exists() and not ck.exists()


def test_the_lock_dies_with_its_process(tmp_path):
    ck = tmp_path / "ck"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from edgetune.runtime.run_lock import FolderLock\n"
         f"with FolderLock({str(ck)!r}):\n    print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = run_cli("finetune", "--epochs", "1", "--checkpoint", ck, "--out", tmp_path / "o.onnx")
        assert busy.exit_code == 2 and f"(pid {holder.pid})" in busy.output
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        holder.stdout.close()
    done = run_cli("finetune", "--epochs", "1", "--checkpoint", ck, "--out", tmp_path / "o.onnx")
    assert done.exit_code == 0, done.output
    assert (ck / "checkpoint.npz").exists() and not (ck / ".edgetune.lock").exists()
