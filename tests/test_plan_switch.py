"""The native engine's dense/listed plan across steps (issue 15, item 4).

An activation with fewer than MIN_SPARSITY zeros is planned densely on the next step (here 20%), and a
dense-planned step rounds differently from a listed one. So: several steps through switches in
both directions agree with the dense reference; the plan is state (predict does not change it,
plan_state/set_plan_state carry it, the trainer checkpoints it), and a run resumed at any step
repeats the uninterrupted run's bits, also through a SIGKILL."""
import os
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import numpy_helper

from conftest import assert_close
from helpers import digits_like
from small_models import plan_batch, plan_cnn, plan_mlp
from edgetune.runtime import load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig

CFG = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9)
# the batches below move the first ReLU's sparsity across 20% (about half zero at most, with the
# positive biases that make small inputs dense): the plan threshold the tests use
THRESHOLD = 0.2


@pytest.fixture(autouse=True)
def _threshold(monkeypatch):
    import edgetune.runtime.engines.native as native

    monkeypatch.setattr(native, "MIN_SPARSITY", THRESHOLD)
    monkeypatch.setenv("EDGETUNE_PLAN_MIN_SPARSITY", str(THRESHOLD))   # for the CLI in child processes
KINDS = "ssddssdds"      # the first ReLU: sparse, sparse, dense, dense, ... -> plans switch both ways


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def model(request, tmp_path_factory):
    """plan_mlp (Gemm kernels) and plan_cnn (conv kernels): the first ReLU's plan follows the input scale."""
    build = {"mlp": plan_mlp, "cnn": plan_cnn}[request.param]
    return load_model(str(build(tmp_path_factory.mktemp("plan") / f"plan_{request.param}.onnx")))


def _batches(kinds=KINDS, seed=0):
    rng = np.random.default_rng(seed)
    return [plan_batch(rng, k) for k in kinds]


def _engine(model, name="native", **kw):
    e = make_engine(name, **kw)
    e.load(model, optimizer=CFG)
    return e


def test_plan_switches_both_ways_and_training_matches_dense(model):
    nat, ref = _engine(model), _engine(model, "dense")
    plans = []
    for x, y in _batches():
        nat.train_step(x, y)
        ref.train_step(x, y)
        plans.append(bool(nat.dense_planned()))
    # the premise: listed -> dense and dense -> listed both happen within the run
    assert any(a and not b for a, b in zip(plans, plans[1:])) and any(b and not a for a, b in zip(plans, plans[1:]))
    got, want = nat.get_params(), ref.get_params()
    for k in want:
        assert_close(got[k], want[k], rtol=1e-5, what=k)


def test_predict_does_not_change_the_plan(model):
    e = _engine(model)
    x, y = plan_batch(np.random.default_rng(1), "d")
    e.train_step(x, y)
    before = e.plan_state()
    assert before["dense_plan"].get("a1") is True
    e.predict(plan_batch(np.random.default_rng(2), "s")[0])     # an evaluation on sparse data
    assert e.plan_state() == before


@settings(max_examples=8)
@given(kinds=st.text("sd", min_size=4, max_size=8), cut=st.integers(1, 7), seed=st.integers(0, 3))
def test_resume_at_any_step_repeats_the_bits(model, kinds, cut, seed):
    """Stop after `cut` steps, carry params, optimizer and plan state into a fresh engine that first
    evaluates (as the trainer does before resuming), continue: the same bits as never stopping."""
    cut = min(cut, len(kinds) - 1)
    bs = _batches(kinds, seed)
    whole = _engine(model)
    for x, y in bs:
        whole.train_step(x, y)
    first = _engine(model)
    for x, y in bs[:cut]:
        first.train_step(x, y)
    params, opt, plan = first.get_params(), first.optimizer_state(), first.plan_state()
    resumed = _engine(model)
    resumed.predict(bs[-1][0])
    resumed.set_params(params)
    resumed.set_optimizer_state(opt)
    resumed.set_plan_state(plan)
    resumed.predict(bs[0][0])
    for x, y in bs[cut:]:
        resumed.train_step(x, y)
    got, want = resumed.get_params(), whole.get_params()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _weights(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_sigkill_resume_through_plan_switches(tmp_path):
    """The CLI, killed after step 18 (epoch 2 step 6 of 12; the last checkpoint is at its step 5) on
    data whose batches mix small and large inputs, so the first ReLU's plan switches between steps:
    resumed, the exported weights equal the uninterrupted run's bit for bit. (Without the plan in
    the checkpoint they differ in the last bits.)"""
    model = plan_mlp(tmp_path / "m.onnx")
    rng = np.random.default_rng(5)
    x, y = plan_batch(rng, "ddds", n=96)     # ~1 large sample in 4: a batch of 8 crosses 20% either way
    data = digits_like(tmp_path / "d.npz", n=96, x=x, y=y)

    def cmd(out, ck, *extra):
        return [sys.executable, "-m", "edgetune.runtime.cli", "finetune", str(model), "--data", str(data),
                "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--optimizer", "sgd", "--seed", "1",
                "--engine", "native", "--keep", "last", "--out", str(out), "--checkpoint", str(ck),
                "--checkpoint-every", "5", *extra]

    env = {k: v for k, v in os.environ.items() if k != "EDGETUNE_TEST_CRASH"}
    ref = subprocess.run(cmd(tmp_path / "ref.onnx", tmp_path / "ck_ref"), capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr[-800:]
    out, ck = tmp_path / "out.onnx", tmp_path / "ck"
    killed = subprocess.run(cmd(out, ck), capture_output=True, text=True, env={**env, "EDGETUNE_TEST_CRASH": "step:18"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-800:]
    done = subprocess.run(cmd(out, ck, "--resume"), capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "resumed from" in done.stdout, done.stderr[-800:]
    want, got = _weights(tmp_path / "ref.onnx"), _weights(out)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
