"""The `device` engine against the emulator behind a real pseudo-terminal.

An offloaded fine-tune must end with the weights of the engine the emulator
hosts (native when it exists) within 1e-5: without faults, with link faults at
rate 0.02, and with device resets in the middle of the run. Faults and resets are
asserted to have happened (counters), never assumed. Timeouts are budgets scaled
by the machine's load, so a busy CI runner makes a run slower, never a test fail.
"""
import os

import numpy as np
import pytest

from edgetune.firmware_bridge.codecs import round_bf16

from edgetune.firmware_bridge.errors import DeviceError, DeviceResetLoopError
from edgetune.runtime import load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")
CFG = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9)
# Link timeouts are budgets, not assertions. Without faults a retry would be a real problem, so
# the first wait is long. With faults, lost frames must be retried quickly: the first wait stays
# short (a slow answer then only costs a harmless duplicate, which the device answers from its
# cache) and the budget before giving up scales with how oversubscribed the CPUs are.
LOAD = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
GENEROUS = dict(timeout=30.0, timeout_scale=LOAD)
SHORT = dict(timeout=0.3, give_up_after=10.0 * LOAD)


@pytest.fixture(scope="module")
def mlp():
    return load_model(os.path.join(ROOT, "digits_mlp.onnx"))


@pytest.fixture(scope="module")
def data():
    d = np.load(os.path.join(ROOT, "digits_shifted.npz"))
    return d["x"].astype(np.float32), d["y"]


def batches(data, steps, bs=32):
    x, y = data
    return [(x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]) for i in range(steps)]


def finetune(engine, model, bs, cfg=CFG, trainable=None):
    engine.load(model, trainable, cfg)
    results = [engine.train_step(x, y) for x, y in bs]
    return results, engine.get_params()


def hosted(dev):
    """An engine like the one the device hosts (the device plans by constraints only)."""
    name = dev.client.info["caps"]["engine"]
    return make_engine(name, **({"auto_dense": False} if name == "native" else {}))


def bf16_hosted(dev, model, bs, cfg=CFG, trainable=None):
    """The device's bf16 fine-tune replayed on the host: parameters, optimizer state and inputs
    rounded to bf16 where device_core rounds them."""
    ref = hosted(dev)
    ref.load(model, trainable, cfg)
    ref.set_params({k: round_bf16(v) for k, v in model.params.items()})
    res = []
    for x, y in bs:
        res.append(ref.train_step(round_bf16(x), y))
        ref.set_params({k: round_bf16(v) for k, v in ref.get_params().items()})
        ref.set_optimizer_state({k: ({n: round_bf16(a) for n, a in v.items()} if isinstance(v, dict) else v)
                                 for k, v in ref.optimizer_state().items()})
    return res, ref.get_params()


def assert_same_updates(p, p_ref, p0, what=""):
    """The updates p - p0 agree with the reference's to 1e-5 of their size: a device that skips
    or repeats a step, or returns its initial weights, fails (a tolerance on p itself would not)."""
    for k in p_ref:
        upd, want = p[k] - p0[k], p_ref[k] - p0[k]
        scale = float(np.abs(want).max())
        assert scale > 0, f"{what}{k}: the reference did not move"
        err = float(np.abs(upd - want).max())
        assert err <= 1e-5 * scale, f"{what}{k}: update differs by {err:.3g} (update size {scale:.3g})"


def compare_with_hosted(dev, model, bs, cfg=CFG, trainable=None):
    """Run the same fine-tune on the device and on the engine the device hosts."""
    res_d, p_d = finetune(dev, model, bs, cfg, trainable)
    if dev.client.info["caps"]["format"] == "bf16":
        res_r, p_r = bf16_hosted(dev, model, bs, cfg, trainable)
        p0 = {k: round_bf16(v) for k, v in model.params.items()}
    else:
        ref = hosted(dev)
        res_r, p_r = finetune(ref, model, bs, cfg, trainable)
        ref.close()
        p0 = model.params
    assert_same_updates(p_d, {k: p_r[k] for k in (trainable or p_r)}, p0)
    for k in p_r:
        np.testing.assert_allclose(p_d[k], p_r[k], rtol=0, atol=1e-5, err_msg=k)
    assert [r.correct for r in res_d] == [r.correct for r in res_r]
    np.testing.assert_allclose([r.loss for r in res_d], [r.loss for r in res_r], rtol=1e-6)
    return dev.counters()


def test_offloaded_finetune_fp32_no_faults(mlp, data):
    dev = make_engine("device", device="emulator", snapshot_every=8, **GENEROUS)
    try:
        c = compare_with_hosted(dev, mlp, batches(data, 12))
        x = data[0][:40]
        ref = hosted(dev)
        ref.load(mlp, optimizer=CFG)
        ref.set_params(dev.get_params())
        np.testing.assert_allclose(dev.predict(x), ref.predict(x), atol=1e-5)
        loss_d, g_d = dev.loss_and_grads(x, data[1][:40])
        loss_r, g_r = ref.loss_and_grads(x, data[1][:40])
        assert abs(loss_d - loss_r) < 1e-6 and set(g_d) == set(g_r)
        for k in g_r:
            np.testing.assert_allclose(g_d[k], g_r[k], rtol=0, atol=1e-6 * float(np.abs(g_r[k]).max()), err_msg=k)
        opt = dev.optimizer_state()
        assert opt["t"] == 12 and set(opt["buf"]) == set(mlp.trainable_names())
    finally:
        dev.close()
    link, device = c["link"], c["device"]
    for key in ("bytes_up", "bytes_down", "frames", "retries", "resyncs", "seconds"):
        assert key in link
    assert link["retries"] == 0 and link["device_resets"] == 0 and link["steps"] == 12
    assert link["snapshots"] >= 2                       # every 8 steps + the final get_params
    assert device["step"] == 12 and device["accelerator"]["totals"]["steps"] == 12
    tot = device["accelerator"]["totals"]
    assert tot["executed_macs"] == tot["required_macs"] < tot["dense_macs"] and tot["skipped_macs"] > 0
    assert dev.emulator is None                          # close() stopped the child


def test_offloaded_finetune_with_link_faults(mlp, data):
    dev = make_engine("device", device="emulator", fault_rate=0.02, seed=7, **SHORT)
    try:
        c = compare_with_hosted(dev, mlp, batches(data, 16))
    finally:
        dev.close()
    link, faults = c["link"], c["device"]["link_faults"]
    print("fault 0.02:", {k: link[k] for k in ("retries", "timeouts", "resyncs", "stale_frames", "frames")},
          faults)
    assert faults["total"] > 0
    assert link["retries"] + link["resyncs"] + link["stale_frames"] > 0


def test_offloaded_finetune_with_device_resets(mlp, data):
    dev = make_engine("device", device="emulator", reset_after=7, snapshot_every=5, **SHORT)
    try:
        c = compare_with_hosted(dev, mlp, batches(data, 16))
    finally:
        dev.close()
    link = c["link"]
    print("reset-after 7:", {k: link[k] for k in ("device_resets", "replayed_steps", "retries", "snapshots",
                                                  "state_uploads")})
    assert link["device_resets"] >= 2 and link["replayed_steps"] >= 1 and link["retries"] >= 1
    assert link["state_uploads"] == 1 + link["device_resets"]
    assert link["steps"] == 16


def assert_faults_and_resets_happened(c):
    """The injection and the recovery really ran: a run with them silently off must fail here."""
    link, faults = c["link"], c["device"]["link_faults"]
    assert faults is not None and faults["total"] > 0, faults
    assert link["device_resets"] >= 1 and link["replayed_steps"] >= 1, link


def test_resets_and_faults_with_adamw_on_last_layers(mlp, data):
    cfg = OptimizerConfig(name="adamw", lr=1e-3)
    dev = make_engine("device", device="emulator", reset_after=5, fault_rate=0.02, seed=3, **SHORT)
    try:
        c = compare_with_hosted(dev, mlp, batches(data, 10, bs=16), cfg, trainable=mlp.trainable_names("last:2"))
    finally:
        dev.close()
    assert_faults_and_resets_happened(c)


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    from small_models import residual_cnn

    return load_model(str(residual_cnn(tmp_path_factory.mktemp("res") / "residual.onnx")))


@pytest.mark.parametrize("which,fmt", [("cnn", "fp32"), ("residual", "fp32"), ("residual", "bf16")])
def test_faults_and_resets_on_models(which, fmt, mlp, residual, data):
    """Faults plus a reset mid-run on a CNN, a branching model and in bf16: the updates are those
    of the hosted engine (with bf16 rounding for bf16), and both faults and a replay happened."""
    model = {"mlp": mlp, "residual": residual, "cnn": None}[which] or load_model(os.path.join(ROOT, "digits_cnn.onnx"))
    # the device dies during step 4 (its 5th), after the snapshot at 3: step 3 is replayed
    dev = make_engine("device", device="emulator", fmt=fmt, reset_after=5, snapshot_every=3, fault_rate=0.05,
                      seed=11, **SHORT)
    try:
        c = compare_with_hosted(dev, model, batches(data, 6, bs=16))
    finally:
        dev.close()
    assert_faults_and_resets_happened(c)


def test_reset_loop_is_a_clear_error(mlp, data):
    dev = make_engine("device", device="emulator", reset_after=1, timeout=0.2, give_up_after=10.0 * LOAD,
                      max_recoveries=2)
    try:
        dev.load(mlp, optimizer=CFG)
        x, y = batches(data, 1)[0]
        with pytest.raises(DeviceResetLoopError) as ei:
            dev.train_step(x, y)
        assert "\n" not in str(ei.value) and "reset" in str(ei.value)
    finally:
        dev.close()


def test_dead_device_is_a_typed_error_not_a_hang(mlp, data):
    dev = make_engine("device", device="emulator", timeout=0.2, retries=2, max_timeout=0.4)
    try:
        dev.load(mlp, optimizer=CFG)
        x, y = batches(data, 1)[0]
        dev.train_step(x, y)
        dev.emulator.proc.kill()
        dev.emulator.proc.wait(10)
        with pytest.raises(DeviceError):
            dev.train_step(x, y)
    finally:
        dev.close()


def test_link_efficiency_compressed_activations(mlp):
    """Bytes sent up per step vs the dense fp32 input (mask + non-zeros on sparse input)."""
    d = np.load(os.path.join(ROOT, "digits_source.npz"))
    x, y = d["x"][:256].astype(np.float32), d["y"][:256]
    density = float(np.count_nonzero(x)) / x.size
    out = {}
    for fmt in ("fp32", "bf16"):
        dev = make_engine("device", device="emulator", fmt=fmt, **GENEROUS)   # a retry would add bytes
        try:
            dev.load(mlp, optimizer=CFG)
            for i in range(0, 256, 64):
                dev.train_step(x[i:i + 64], y[i:i + 64])
            out[fmt] = dev.counters()["link"]["up_vs_dense_input"]
        finally:
            dev.close()
    print(f"input density {density:.3f}: bytes up per step / dense fp32 input bytes = "
          f"{out['fp32']:.3f} (fp32), {out['bf16']:.3f} (bf16)")
    # values + 1-bit mask + framing; 3% allowance for headers, COBS and the TRAIN_STEP frames
    assert out["fp32"] <= density + 1 / 32 + 0.03
    assert out["bf16"] <= density / 2 + 1 / 32 + 0.03
    assert out["fp32"] < 1.0


def test_offloaded_cnn_fp32_and_bf16(data):
    cnn = load_model(os.path.join(ROOT, "digits_cnn.onnx"))
    bs = batches(data, 4, bs=16)
    for fmt in ("fp32", "bf16"):
        dev = make_engine("device", device="emulator", fmt=fmt, **GENEROUS)
        try:
            compare_with_hosted(dev, cnn, bs)
            assert dev.client.info["caps"]["format"] == fmt
            p = dev.get_params()
        finally:
            dev.close()
        if fmt == "bf16":
            for k in p:
                assert np.array_equal(p[k].view(np.uint32) & 0xFFFF, np.zeros(p[k].shape, np.uint32)), k
