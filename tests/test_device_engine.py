"""The `device` engine against the emulator behind a real pseudo-terminal.

An offloaded fine-tune must end with the weights of the engine the emulator
hosts (native when it exists) within 1e-5: without faults, with link faults at
rate 0.02, and with device resets in the middle of the run.
"""
import os

import numpy as np
import pytest

from edgetune.firmware_bridge.errors import DeviceError, DeviceResetLoopError
from edgetune.runtime import load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")
CFG = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9)


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


def compare_with_hosted(dev, model, bs, cfg=CFG, trainable=None):
    """Run the same fine-tune on the device and on the engine the device hosts."""
    res_d, p_d = finetune(dev, model, bs, cfg, trainable)
    ref = make_engine(dev.client.info["caps"]["engine"])
    res_r, p_r = finetune(ref, model, bs, cfg, trainable)
    ref.close()
    for k in p_r:
        np.testing.assert_allclose(p_d[k], p_r[k], rtol=0, atol=1e-5, err_msg=k)
    assert [r.correct for r in res_d] == [r.correct for r in res_r]
    np.testing.assert_allclose([r.loss for r in res_d], [r.loss for r in res_r], rtol=1e-6)
    return dev.counters()


def test_offloaded_finetune_fp32_no_faults(mlp, data):
    dev = make_engine("device", device="emulator", snapshot_every=8)
    try:
        c = compare_with_hosted(dev, mlp, batches(data, 12))
        x = data[0][:40]
        ref = make_engine(dev.client.info["caps"]["engine"])
        ref.load(mlp, optimizer=CFG)
        ref.set_params(dev.get_params())
        np.testing.assert_allclose(dev.predict(x), ref.predict(x), atol=1e-5)
        loss_d, g_d = dev.loss_and_grads(x, data[1][:40])
        loss_r, g_r = ref.loss_and_grads(x, data[1][:40])
        assert abs(loss_d - loss_r) < 1e-6 and set(g_d) == set(g_r)
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
    assert device["accelerator"]["totals"]["skipped_macs"] > 0
    assert dev.emulator is None                          # close() stopped the child


def test_offloaded_finetune_with_link_faults(mlp, data):
    dev = make_engine("device", device="emulator", fault_rate=0.02, seed=7, timeout=0.3)
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
    dev = make_engine("device", device="emulator", reset_after=7, snapshot_every=5, timeout=0.3)
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


def test_resets_and_faults_with_adamw_on_last_layers(mlp, data):
    cfg = OptimizerConfig(name="adamw", lr=1e-3)
    dev = make_engine("device", device="emulator", reset_after=5, fault_rate=0.02, seed=3, timeout=0.3)
    try:
        compare_with_hosted(dev, mlp, batches(data, 10, bs=16), cfg, trainable=mlp.trainable_names("last:2"))
    finally:
        dev.close()


def test_reset_loop_is_a_clear_error(mlp, data):
    dev = make_engine("device", device="emulator", reset_after=1, timeout=0.2, max_recoveries=2)
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
        dev = make_engine("device", device="emulator", fmt=fmt)
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
    dev = make_engine("device", device="emulator")
    try:
        compare_with_hosted(dev, cnn, bs)
    finally:
        dev.close()
    dev = make_engine("device", device="emulator", fmt="bf16")
    try:
        res, p = finetune(dev, cnn, bs)
        assert dev.client.info["caps"]["format"] == "bf16"
    finally:
        dev.close()
    ref = make_engine("dense")
    res_r, p_r = finetune(ref, cnn, bs)
    for k in p:
        assert np.array_equal(p[k].view(np.uint32) & 0xFFFF, np.zeros(p[k].shape, np.uint32)), k
        np.testing.assert_allclose(p[k], p_r[k], atol=0.1 * float(np.abs(p_r[k]).max()), err_msg=k)
    assert abs(res[-1].loss - res_r[-1].loss) < 0.1 * abs(res_r[-1].loss) + 1e-3
