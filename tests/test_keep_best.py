"""Issue 12, item 4: a worse model is never written silently. Keep the best epoch (the starting
weights count), warn when worse, --patience, the cosine schedule (against torch, and on the
device), and each bundled model's own learning rate."""
import json

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import numpy_helper

from conftest import assert_close
from requires import need
from helpers import digits_like, run_cli, tiny_mlp
from edgetune import models
from edgetune.runtime import load_model
from edgetune.runtime.optim import OptimizerConfig
from edgetune.runtime.selection import BestEpoch
from edgetune.runtime.trainer import FinetuneConfig, local_fit, new_fit_state, resolve_defaults


def _weights(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _warnings(result):
    return [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]


def test_a_ruinous_rate_writes_the_starting_weights_with_a_warning(tmp_path):
    out = tmp_path / "o.onnx"
    result = run_cli("finetune", "--epochs", "1", "--lr", "0.5", "--out", out)
    assert result.exit_code == 0, result.output
    assert any("no epoch beat the starting model (72.3%)" in w for w in _warnings(result)), result.stderr
    assert "kept the starting weights (epoch 0)" in result.output
    original = load_model("digits_cnn").params
    got = _weights(out)
    for name, value in original.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_keep_last_warns_when_the_result_is_worse(tmp_path):
    result = run_cli("-q", "finetune", "--epochs", "1", "--lr", "0.5", "--keep", "last", "--out", tmp_path / "o.onnx")
    assert result.exit_code == 0
    (warn,) = _warnings(result)
    assert "worse than the model it started from on the validation set (72.3% ->" in warn
    assert result.stdout.startswith("val acc 72.3% -> ")


def test_keep_best_writes_the_best_validation_epoch(tmp_path):
    out, rep_path = tmp_path / "o.onnx", tmp_path / "r.json"
    result = run_cli("finetune", "--epochs", "3", "--out", out, "--report", rep_path)
    assert result.exit_code == 0, result.output
    rep = json.loads(rep_path.read_text())
    cands = [(rep["before"]["val_acc"], -rep["before"]["val_loss"], 0)] + \
            [(h["val_acc"], -h["val_loss"], h["epoch"]) for h in rep["history"]]
    best = max(cands)
    assert rep["selected"]["epoch"] == best[2]
    assert rep["after"]["val_acc"] == pytest.approx(best[0])
    ev = run_cli("eval", out, "--data", "digits_shifted")
    assert abs(float(ev.output.split("accuracy ")[1].split("%")[0]) / 100 - best[0]) < 5e-5


def _reference_selection(before, epochs, patience):
    """Plain restatement of the rule: best by accuracy, ties by lower loss; stop after `patience`
    epochs without a better one."""
    best, best_epoch, since = before, 0, 0
    for i, cand in enumerate(epochs, 1):
        if cand[0] > best[0] or (cand[0] == best[0] and cand[1] < best[1]):
            best, best_epoch, since = cand, i, 0
        else:
            since += 1
        if patience is not None and since >= patience:
            return best_epoch, i
    return best_epoch, len(epochs)


class _FakeEngine:
    """Weights are just the epoch number, so the kept weights say which epoch was kept."""

    def __init__(self):
        self.epoch = 0

    def get_params(self):
        return {"w": np.array([self.epoch], np.float32)}

    def set_params(self, p):
        self.epoch = int(p["w"][0])


accs = st.sampled_from([0.5, 0.6, 0.7])
losses = st.sampled_from([0.3, 0.4])


@settings(max_examples=200, deadline=None)
@given(before=st.tuples(accs, losses), epochs=st.lists(st.tuples(accs, losses), min_size=1, max_size=8),
       patience=st.one_of(st.none(), st.integers(1, 4)))
def test_best_epoch_and_patience_follow_the_rule(before, epochs, patience):
    want_epoch, want_stop = _reference_selection(before, epochs, patience)
    eng, keeper = _FakeEngine(), BestEpoch("best", patience)
    keeper.start(eng, *before)
    stopped_at = len(epochs)
    for i, (acc, loss) in enumerate(epochs, 1):
        eng.epoch = i
        if keeper.observe(eng, {"epoch": i, "val_acc": acc, "val_loss": loss}):
            stopped_at = i
            break
    assert (keeper.best_epoch, stopped_at) == (want_epoch, want_stop)
    keeper.restore(eng)
    assert eng.epoch == want_epoch


def test_patience_stops_and_a_resumed_run_stays_stopped(tmp_path):
    model = tiny_mlp(tmp_path / "m.onnx")
    data = digits_like(tmp_path / "d.npz", n=64)          # random labels: no epoch keeps improving
    ck = tmp_path / "ck"
    args = ["finetune", model, "--data", data, "--epochs", "12", "--patience", "2", "--lr", "0.05",
            "--engine", "dense", "--checkpoint", ck]
    first = run_cli(*args, "--out", tmp_path / "a.onnx", "--report", tmp_path / "a.json")
    assert first.exit_code == 0, first.output
    rep = json.loads((tmp_path / "a.json").read_text())
    ran = len(rep["history"])
    assert ran < 12 and rep["selected"]["stopped_early"] == ran
    assert f"stopped early after epoch {ran}: no better val_acc for 2 epochs (--patience)" in first.output
    again = run_cli(*args, "--resume", "--out", tmp_path / "b.onnx")
    assert again.exit_code == 0, again.output
    assert "resumed from" in again.output and "epoch 1/" not in again.output.split("resumed from")[1]
    a, b = _weights(tmp_path / "a.onnx"), _weights(tmp_path / "b.onnx")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_keeps_the_best_epoch_it_had_seen(tmp_path):
    model = tiny_mlp(tmp_path / "m.onnx")
    data = digits_like(tmp_path / "d.npz", n=64)
    common = ["finetune", model, "--data", data, "--lr", "0.05", "--engine", "dense", "--seed", "2"]
    whole = run_cli(*common, "--epochs", "5", "--out", tmp_path / "whole.onnx", "--report", tmp_path / "w.json")
    assert whole.exit_code == 0, whole.output
    part = run_cli(*common, "--epochs", "2", "--checkpoint", tmp_path / "ck", "--out", tmp_path / "p.onnx")
    assert part.exit_code == 0, part.output
    rest = run_cli(*common, "--epochs", "5", "--checkpoint", tmp_path / "ck", "--resume",
                   "--out", tmp_path / "r.onnx", "--report", tmp_path / "r.json")
    assert rest.exit_code == 0, rest.output
    w, r = json.loads((tmp_path / "w.json").read_text()), json.loads((tmp_path / "r.json").read_text())
    assert w["selected"] == r["selected"]
    a, b = _weights(tmp_path / "whole.onnx"), _weights(tmp_path / "r.onnx")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# -- the cosine schedule ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_cosine_schedule_matches_torch(zoo_export, name):
    torch = need("torch")
    module, chw, path = zoo_export("mlp_relu", "script")
    model = load_model(path)
    steps, lr = 7, 0.05
    from edgetune.runtime.engines.dense import DenseEngine

    eng = DenseEngine()
    eng.load(model, None, OptimizerConfig(name=name, lr=lr, schedule="cosine", total_steps=steps))
    module = module.__class__()
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.params.items()})
    opt = (torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9) if name == "sgd"
           else torch.optim.AdamW(module.parameters(), lr=lr))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    rng = np.random.default_rng(3)
    seen = []
    for t in range(steps):
        x = rng.standard_normal((8,) + chw).astype(np.float32)
        y = rng.integers(0, 5, 8)
        seen.append((opt.param_groups[0]["lr"], eng.optimizer.cfg.lr_at(t + 1)))
        eng.train_step(x, y)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        sched.step()
    for want, got in seen:
        assert got == pytest.approx(want, rel=1e-9)
    params = eng.get_params()
    for k, p in module.named_parameters():
        assert_close(params[k], p.detach().numpy(), rtol=1e-4, what=f"{name} {k}")


def test_cosine_schedule_runs_on_the_device_as_on_the_host():
    from edgetune.runtime.engines import make_engine

    model = load_model("digits_cnn")
    ds = models.load_dataset("digits_shifted")
    cfg = OptimizerConfig(name="sgd", lr=0.05, schedule="cosine", total_steps=6)
    host, dev = make_engine("native"), make_engine("device", device="emulator")
    try:
        for eng in (host, dev):
            eng.load(model, None, cfg)
            state = new_fit_state(0)
            local_fit(eng, ds["x"][:96], ds["y"][:96], epochs=2, batch_size=32, state=state,
                      rng=np.random.default_rng(0))
        a, b = host.get_params(), dev.get_params()
        for k in a:
            assert_close(b[k], a[k], rtol=1e-5, what=k)
        # and the schedule did act: the same run without it ends elsewhere
        flat = make_engine("native")
        flat.load(model, None, OptimizerConfig(name="sgd", lr=0.05))
        local_fit(flat, ds["x"][:96], ds["y"][:96], epochs=2, batch_size=32, state=new_fit_state(0),
                  rng=np.random.default_rng(0))
        assert not np.allclose(flat.get_params()["fc.weight"], a["fc.weight"], rtol=1e-3)
    finally:
        dev.close()


def test_cosine_is_printed_per_epoch_and_in_the_fingerprint(tmp_path):
    result = run_cli("finetune", "--epochs", "2", "--schedule", "cosine", "--out", tmp_path / "o.onnx")
    assert result.exit_code == 0, result.output
    assert "lr 0.02 (sgd, cosine)" in result.output
    lrs = [float(ln.split("  lr ")[1]) for ln in result.output.splitlines() if ln.startswith("epoch ")]
    assert len(lrs) == 2 and 0 < lrs[1] < lrs[0] < 0.02
    assert FinetuneConfig(schedule="cosine", epochs=3).fingerprint()["epochs"] == 3
    assert "epochs" not in FinetuneConfig().fingerprint()


# -- per-model learning rates -------------------------------------------------------------------
def test_every_bundled_model_has_its_own_default_rate(tmp_path):
    for m in models.list_models():
        lr = m["finetune_defaults"]["lr"]
        assert 0 < lr <= 0.05
        assert resolve_defaults(FinetuneConfig(model=m["name"])).lr == lr
    assert resolve_defaults(FinetuneConfig(model=str(tiny_mlp(tmp_path / "m.onnx")), data="x")).lr == 0.02
    assert resolve_defaults(FinetuneConfig(model="bench_vgg_relu", lr=0.1)).lr == 0.1


def test_bench_vgg_one_epoch_no_longer_loses_accuracy(tmp_path):
    rep_path = tmp_path / "r.json"
    result = run_cli("finetune", "bench_vgg_relu", "--epochs", "1", "--out", tmp_path / "o.onnx",
                     "--report", rep_path, "--keep", "last")
    assert result.exit_code == 0, result.output
    rep = json.loads(rep_path.read_text())
    assert rep["config"]["lr"] == models.model_info("bench_vgg_relu")["finetune_defaults"]["lr"]
    assert rep["history"][0]["val_acc"] >= rep["before"]["val_acc"]
    assert not _warnings(result)


def test_a_checkpoint_from_before_these_settings_still_resumes(tmp_path):
    from edgetune.runtime import checkpoint as ckpt

    model = tiny_mlp(tmp_path / "m.onnx")
    data = digits_like(tmp_path / "d.npz", n=64)
    args = ["finetune", model, "--data", data, "--engine", "dense", "--checkpoint", tmp_path / "ck",
            "--out", tmp_path / "o.onnx"]
    assert run_cli(*args, "--epochs", "1").exit_code == 0
    old = ckpt.load(str(tmp_path / "ck"))
    meta = old["meta"]
    for key in ("schedule", "num_classes", "normalize", "keep"):
        del meta["fingerprint"][key]
    for key in ("keeper", "steps_done", "stopped_early"):
        del meta[key]
    ckpt.save(str(tmp_path / "ck"), old["params"], old["opt_state"], meta)
    result = run_cli(*args, "--epochs", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "epoch 2/2" in result.output
    changed = run_cli(*args, "--epochs", "3", "--resume", "--keep", "last")
    assert changed.exit_code == 2 and "different settings (keep)" in changed.output
