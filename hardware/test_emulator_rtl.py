"""Training through the simulated RTL link: `edgetune emulator --rtl` on a pty, the real
DeviceEngine and DeviceClient on the host side, digits_mlp. The reference is the engine the
device core hosts, built by the device core's own factory (device_core.make_hosted_engine), so
the comparison is bit for bit.

Pass/fail does not depend on wall-clock timing: a host timeout that fires early only causes a
retry, which the RTL's response cache answers without running anything again, and the retry
budget (count and give-up time) is far beyond what a slow, shared machine needs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.firmware_bridge.device_core import hosted_engine_name, make_hosted_engine
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
    name = hosted_engine_name()          # what `emulator --rtl` hosts when no engine is named
    ref = make_hosted_engine(name)
    res, params = _train(ref, model, _data())
    return model, res, params, name


@pytest.mark.parametrize("fault_rate", [0.0, 0.00002], ids=["clean_line", "bit_flips"])
def test_training_through_rtl_link_is_bit_identical_to_native(reference, fault_rate):
    model, ref_res, ref_params, ref_engine = reference
    emu = RtlEmulator("--fault-rate", str(fault_rate), "--seed", "3")
    try:
        # a short base timeout (the device states how much slower than a board its line is), so a
        # frame lost to a bit flip costs little; a generous retry budget, so a loaded machine only
        # adds retries, never a failure
        dev = make_engine("device", device=emu.path, timeout=0.1, max_timeout=2.0, retries=1000,
                          give_up_after=600.0)
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
    assert device["engine"] == ref_engine
    # nothing ran twice: the device executed exactly two TRAIN_STEPs (session_steps counts
    # executions in device_core; the RTL's step counter and the accelerator accounting agree)
    assert device["session_steps"] == 2 and device["step"] == 2
    assert device["accelerator"]["totals"]["steps"] == 2
    assert link["steps"] == 2 and link["device_resets"] == 0
    flips = device["link_faults"]["flips_h2d"] + device["link_faults"]["flips_d2h"]
    print(f"\nflips {device['link_faults']}, host retries {link['retries']} timeouts {link['timeouts']} "
          f"resyncs {link['resyncs']} stale {link['stale_frames']}, rtl link {device['link']}")
    if fault_rate:
        assert flips > 0 and link["retries"] > 0
    else:
        # (retries could still come from a loaded machine's timing; corrupted frames cannot)
        assert flips == 0 and device["link"]["bad_crc"] == 0 and device["link"]["bad_cobs"] == 0
