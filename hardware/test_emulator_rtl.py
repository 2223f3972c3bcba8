"""Training through the simulated RTL link: `edgetune emulator --rtl` on a pty, the real
DeviceEngine and DeviceClient on the host side, digits_mlp, native engine as reference."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.runtime import load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig

ROOT = Path(__file__).resolve().parents[1]
CFG = OptimizerConfig(name="sgd", lr=0.05, momentum=0.0)


class RtlEmulator:
    """`edgetune emulator --rtl --pty [--fault-rate P]` as a child; the path is its first stdout line."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-c", "from edgetune.runtime.cli import main; main()",
                                      "emulator", "--rtl", "--pty", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.path = self.proc.stdout.readline().strip()
        if not self.path:
            raise AssertionError(f"emulator --rtl did not start: {self.proc.stderr.read()[-2000:]}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return self.proc.returncode


def _data():
    d = np.load(ROOT / "models" / "digits_shifted.npz")
    x, y = d["x"].astype(np.float32), d["y"]
    return [(x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]) for i in range(2)]


def _train(engine, model, batches):
    engine.load(model, optimizer=CFG)
    res = [engine.train_step(x, y) for x, y in batches]
    return res, engine.get_params()


@pytest.fixture(scope="module")
def reference():
    model = load_model(str(ROOT / "models" / "digits_mlp.onnx"))
    ref = make_engine("native")
    res, params = _train(ref, model, _data())
    return model, res, params


@pytest.mark.parametrize("fault_rate", [0.0, 0.00005], ids=["clean_line", "bit_flips"])
def test_training_through_rtl_link_is_bit_identical_to_native(reference, fault_rate):
    model, ref_res, ref_params = reference
    emu = RtlEmulator("--fault-rate", str(fault_rate), "--seed", "3")
    try:
        # a short base timeout: the device states how much slower than a board its line is
        dev = make_engine("device", device=emu.path, timeout=0.25)
        try:
            res, params = _train(dev, model, _data())
            c = dev.counters()
        finally:
            dev.close()
    finally:
        assert emu.close() == 0
    assert [r.loss for r in res] == [r.loss for r in ref_res]          # bit-identical, not close
    assert [r.correct for r in res] == [r.correct for r in ref_res]
    for k, v in ref_params.items():
        np.testing.assert_array_equal(params[k], v, err_msg=k)
    link, device = c["link"], c["device"]
    assert device["step"] == 2 and device["accelerator"]["totals"]["steps"] == 2   # nothing ran twice
    assert link["steps"] == 2 and link["device_resets"] == 0
    flips = device["link_faults"]["flips_h2d"] + device["link_faults"]["flips_d2h"]
    if fault_rate:
        assert flips > 0 and link["retries"] > 0
    else:
        # (retries could still come from a loaded machine's timing; corrupted frames cannot)
        assert flips == 0 and device["link"]["bad_crc"] == 0 and device["link"]["bad_cobs"] == 0
