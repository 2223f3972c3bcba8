"""`edgetune emulator --rtl`: the whole device simulated in RTL (device_top.v: link, control
processor and firmware, training array) on a pty, trained by the real DeviceEngine/DeviceClient.
Three training steps (8 samples each) of an MLP on digits data must equal the Python model of the device
(hardware/device_model.py) bit for bit, losses and every parameter, and stay within 1e-5 (relative
to each tensor's largest magnitude) of the native engine; again with bit flips on the simulated
line and the device resetting itself after every second step of a session (--fault-rate 1e-4
--reset-after 2: the host retries corrupted frames, and when a reset loses an answer it restores its
last copy and runs the step again, PROTOCOL.md section 10: same result).

The MLP is digits_mlp's shape cut to 64-16-10 so that its state crosses the simulated link in
seconds; the demonstration on digits_mlp itself is `edgetune finetune --engine device` against
`edgetune emulator --rtl` (docs/HARDWARE.md gives the figures of a run).

Pass/fail does not depend on wall-clock timing: a host timeout that fires early only causes a
retry, which the RTL's response cache answers without running anything again, and the retry
budget is far beyond what a slow, shared machine needs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.firmware_bridge.device_core import make_hosted_engine
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig

ROOT = Path(__file__).resolve().parents[1]
CFG = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)
F32 = np.float32


class RtlEmulator:
    """`edgetune emulator --rtl --pty [args]` as a child; the path is its first stdout line."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-c", "from edgetune.runtime.cli import main; main()",
                                      "emulator", "--rtl", "--pty", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.path = self.proc.stdout.readline().strip()
        if not self.path:
            raise AssertionError(f"emulator --rtl did not start: {self.proc.stderr.read()[-2000:]}")

    def close(self):
        """Stop it; returns (exit code, bit flips it injected on the line in both directions)."""
        self.proc.terminate()
        try:
            _out, err = self.proc.communicate(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        m = re.search(r"host->device (\d+), device->host (\d+)", err or "")
        return self.proc.returncode, (int(m.group(1)) + int(m.group(2))) if m else None


def small_mlp():
    """digits_mlp's first layer cut to 16 units: Flatten, Gemm 64->16, ReLU, Gemm 16->10."""
    from edgetune.runtime import load_model

    m = load_model("digits_mlp")
    keep = [n for n in m.nodes if n.name not in ("/fc2/Gemm", "/relu_1/Relu")]
    fc3 = next(n for n in keep if n.name == "/fc3/Gemm")
    fc3.inputs = [next(n for n in keep if n.name == "/relu/Relu").output]
    m.nodes = keep
    p = m.params
    m.params = {"fc1.weight": p["fc1.weight"][:16].copy(), "fc1.bias": p["fc1.bias"][:16].copy(),
                "fc3.weight": p["fc3.weight"][:, :16].copy() * 4, "fc3.bias": p["fc3.bias"].copy()}
    return m


def _batches():
    d = np.load(ROOT / "models" / "digits_shifted.npz")
    x, y = d["x"].astype(F32), d["y"]
    return [(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]) for i in range(3)]   # small steps: the processor's share is per sample


def _train(engine, model, batches):
    engine.load(model, optimizer=CFG)
    res = [engine.train_step(x, y) for x, y in batches]
    return res, engine.get_params()


@pytest.fixture(scope="module")
def reference():
    import json

    from edgetune.firmware_bridge.codecs import encode_model_descriptor
    from edgetune.hardware.device_model import DeviceModel

    model = small_mlp()
    dm = DeviceModel.from_descriptor(json.loads(encode_model_descriptor(model, model.trainable_names(), CFG,
                                                                        "cross_entropy")))
    dm.load_state(model.params, {"t": 0, "buf": {}}, 0)
    losses = [float(dm.train_step(x, y)[0]) for x, y in _batches()]
    native = make_hosted_engine("native")
    _res, native_params = _train(native, small_mlp(), _batches())
    return model, losses, dm.params, native_params


@pytest.mark.timeout(1200)      # each lost answer costs the host an attempt timeout of the simulated device
@pytest.mark.parametrize("args", [(), ("--fault-rate", "0.0001", "--seed", "3", "--reset-after", "2")],
                         ids=["clean_line", "bit_flips_and_resets"])
def test_training_on_the_rtl_device_matches_its_model_and_native(reference, args, firmware_tools):
    model, want_losses, want_params, native_params = reference
    emu = RtlEmulator(*args)
    try:
        # timeouts not scaled by the device's hint: the client adds 3 x the measured round trip to
        # every attempt, which already holds the simulation's slowness, so a frame lost to a bit
        # flip costs seconds, not minutes; a generous retry budget, so a loaded machine only adds
        # retries (answered from the RTL's response cache), never a failure
        dev = make_engine("device", device=emu.path, timeout=1.0, max_timeout=4.0, retries=1000,
                          give_up_after=900.0, timeout_scale=1.0,
                          snapshot_every=1 if "--reset-after" in args else 32)
        try:
            res, params = _train(dev, small_mlp(), _batches())
            c = dev.counters()
        finally:
            dev.close()
    finally:
        code, flips = emu.close()
        assert code == 0
    assert [r.loss for r in res] == want_losses                         # bit-identical, not close
    for k, v in want_params.items():
        np.testing.assert_array_equal(params[k].view(np.uint32), v.view(np.uint32), err_msg=k)
        ref = native_params[k]
        assert np.abs(params[k] - ref).max() <= 1e-5 * np.abs(ref).max(), k
    link, device = c["link"], c["device"]
    assert device["compute"] == "rtl"
    print(f"\nflips {flips}, host retries {link['retries']} timeouts {link['timeouts']} resyncs {link['resyncs']} "
          f"resets {link['device_resets']} replayed {link['replayed_steps']}, rtl link {device['link']}")
    if "--reset-after" in args:
        # steps 1 and 2 each reset the device: the host restored its copy and ran them again; bit
        # flips corrupted frames (the RTL's counters of this boot, the host's retries over all)
        assert link["device_resets"] == 2 and device["boots"] == 3 and device["step"] == 3
        assert flips and link["retries"] > 0
    else:
        # nothing ran twice: the device executed exactly three TRAIN_STEPs; a clean line
        assert device["session_steps"] == 3 and device["step"] == 3 and link["device_resets"] == 0
        assert flips == 0 and device["link"]["bad_crc"] == 0 and device["link"]["bad_cobs"] == 0
