"""Crash and resume, deterministically: a fine-tune killed with SIGKILL at a chosen step (or in
the middle of writing a checkpoint) resumes to exactly the uninterrupted weights. The kill comes
from the trainer's test-only crash point (EDGETUNE_TEST_CRASH, runtime/testhooks.py), never from
racing a timer. Also: a corrupt checkpoint, one written with other settings, and the device engine."""
import os
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from helpers import tiny_mlp, digits_like

KILLED = -signal.SIGKILL


def _weights(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _cmd(model, data, out, ckpt, engine, *extra):
    # 60 samples / batch 8 = 8 steps per epoch (the last one short); checkpoints every 3 steps and
    # at each epoch's end. --keep last: the output is the last step's weights (the default keeps
    # the best epoch, which could hide a resume that trained the later epochs wrongly)
    return [sys.executable, "-m", "edgetune.runtime.cli", "finetune", str(model), "--data", str(data),
            "--epochs", "3", "--batch-size", "8", "--lr", "0.05", "--optimizer", "adamw", "--seed", "3",
            "--engine", engine, "--out", str(out), "--checkpoint", str(ckpt), "--checkpoint-every", "3",
            "--keep", "last", *map(str, extra)]


def _run(cmd, crash=None):
    env = dict(os.environ)
    env.pop("EDGETUNE_TEST_CRASH", None)
    if crash:
        env["EDGETUNE_TEST_CRASH"] = crash
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def job(tmp_path):
    """(model, data, reference weights of the uninterrupted run) per engine, computed on demand."""
    model = tiny_mlp(tmp_path / "m.onnx", hidden=32)
    data = digits_like(tmp_path / "d.npz", n=60)
    refs = {}

    def ref(engine, *extra):
        key = (engine,) + extra
        if key not in refs:
            out = tmp_path / f"ref-{len(refs)}.onnx"
            r = _run(_cmd(model, data, out, tmp_path / f"ck-ref-{len(refs)}", engine, *extra))
            assert r.returncode == 0, r.stderr[-800:]
            refs[key] = _weights(out)
        return refs[key]

    return model, data, ref


def _crash_then_resume(tmp_path, job, engine, crash, *extra):
    model, data, ref = job
    out, ck = tmp_path / "out.onnx", tmp_path / "ck"
    killed = _run(_cmd(model, data, out, ck, engine, *extra), crash=crash)
    assert killed.returncode == KILLED, (killed.returncode, killed.stderr[-800:])
    assert not out.exists(), "a killed run must not leave an output file"
    assert (ck / "checkpoint.npz").exists()
    done = _run(_cmd(model, data, out, ck, engine, *extra, "--resume"))
    assert done.returncode == 0, (done.returncode, done.stdout[-500:], done.stderr[-500:])
    assert "resumed from" in done.stdout
    want, got = ref(engine, *extra), _weights(out)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    return done


@pytest.mark.parametrize("engine", ["dense", "native"])
def test_kill_mid_epoch_then_resume(tmp_path, job, engine):
    """Killed after step 13 (epoch 2, step 5; the last checkpoint is at its step 3): resumed, the
    lost steps are redone on the same batches."""
    done = _crash_then_resume(tmp_path, job, engine, "step:13")
    assert "epoch 2, step 3" in done.stdout


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path, job):
    """Killed halfway through writing the 3rd checkpoint (the end of epoch 1): the 2nd one (epoch 1
    step 6) is intact and the run resumes from it."""
    done = _crash_then_resume(tmp_path, job, "native", "checkpoint:3")
    assert "epoch 1, step 6" in done.stdout
    # the half-written temporary file is cleaned up by the resumed run's next checkpoint
    assert [f for f in os.listdir(tmp_path / "ck") if f.startswith(".tmp-")] == []


def test_resume_on_the_device_engine(tmp_path, job):
    """The emulated device, killed with the host at step 10, resumes to the uninterrupted run."""
    _crash_then_resume(tmp_path, job, "device", "step:10", "--device", "emulator")


def _assert_clean_error(r, *words):
    assert r.returncode not in (0, KILLED), r.returncode
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr + r.stdout, r.stderr[-800:]
    for w in words:
        assert w in r.stderr, (w, r.stderr[-800:])


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, job):
    model, data, _ = job
    out, ck = tmp_path / "out.onnx", tmp_path / "ck"
    assert _run(_cmd(model, data, out, ck, "native"), crash="step:5").returncode == KILLED
    blob = (ck / "checkpoint.npz").read_bytes()
    (ck / "checkpoint.npz").write_bytes(blob[:len(blob) // 3])          # a truncated file
    r = _run(_cmd(model, data, out, ck, "native", "--resume"))
    _assert_clean_error(r, "checkpoint.npz", "unreadable checkpoint")
    assert not out.exists()


def test_checkpoint_with_other_settings_is_refused(tmp_path, job):
    model, data, _ = job
    out, ck = tmp_path / "out.onnx", tmp_path / "ck"
    assert _run(_cmd(model, data, out, ck, "native"), crash="step:5").returncode == KILLED
    cmd = _cmd(model, data, out, ck, "native", "--resume")
    cmd[cmd.index("--lr") + 1] = "0.01"
    r = _run(cmd)
    _assert_clean_error(r, "different settings", "lr")
    assert not out.exists()
