"""A fine-tune killed with SIGKILL after a checkpoint resumes to exactly the uninterrupted weights."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper

from helpers import tiny_mlp, digits_like


def _weights(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _cmd(model, data, out, ckpt, engine):
    return [sys.executable, "-m", "edgetune.runtime.cli", "finetune", str(model), "--data", str(data),
            "--epochs", "3", "--batch-size", "8", "--lr", "0.05", "--optimizer", "adamw", "--seed", "3",
            "--engine", engine, "--out", str(out), "--checkpoint", str(ckpt), "--checkpoint-every", "4"]


def _run_resume(tmp_path, engine):
    model = tiny_mlp(tmp_path / "m.onnx", hidden=256)
    data = digits_like(tmp_path / "d.npz", n=2400)
    ref_out = tmp_path / "ref.onnx"
    subprocess.run(_cmd(model, data, ref_out, tmp_path / "ck_ref", engine), check=True, capture_output=True)

    out, ck = tmp_path / "out.onnx", tmp_path / "ck"
    proc = subprocess.Popen(_cmd(model, data, out, ck, engine), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (ck / "checkpoint.npz").exists():
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert proc.poll() is None, "the run must still be going when it is killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists(), "a killed run must not leave an output file"

    done = subprocess.run(_cmd(model, data, out, ck, engine) + ["--resume"], capture_output=True, text=True)
    assert done.returncode == 0, (done.returncode, done.stdout[-500:], done.stderr[-500:])
    assert "resumed from" in done.stdout
    ref, got = _weights(ref_out), _weights(out)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def test_sigkill_then_resume_dense(tmp_path):
    _run_resume(tmp_path, "dense")


def test_sigkill_then_resume_native(tmp_path):
    _run_resume(tmp_path, "native")
