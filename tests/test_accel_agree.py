"""One accelerator: the emulator's accounting and `edgetune simulate` agree on the same step.

Both read runtime/accel/spec.json and cost a layer with runtime/accel/cost.py. For one training
step (same parameters, same batch) the emulator's cycles, memory bytes, estimator cycles and
MACs per layer and phase must equal simulate's constraint design on that step, whether the
emulator hosts the native kernels (masks from their activation store) or the dense reference.
The device runs in process, behind the loopback transport and the real client.
"""
import math
import os

import numpy as np
import pytest

from edgetune.firmware_bridge.codecs import round_bf16
from edgetune.firmware_bridge.device_core import EmulatedDevice
from edgetune.runtime import load_model
from edgetune.runtime import simulate as sim
from edgetune.runtime.accel.spec import load_spec
from edgetune.runtime.engines.dense import DenseEngine
from edgetune.runtime.optim import OptimizerConfig

from test_emulator import start

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")
CFG = OptimizerConfig(name="sgd", lr=0.05)


def _data(n):
    d = np.load(os.path.join(ROOT, "digits_shifted.npz"))
    return d["x"][:n].astype(np.float32), d["y"][:n]


def _simulated(model, params, x, y, cfg):
    """simulate_step's constraint design on the values and gradients of (x, y) at `params`."""
    ref = DenseEngine()
    ref.load(model, model.trainable_names())
    ref.set_params(params)
    _, _, vals, dvals = ref.forward_backward_values(x, y)
    return {r["name"]: r["designs"]["constraint"] for r in sim.simulate_step(model, vals, dvals,
                                                                             model.trainable_names(), cfg)}


@pytest.mark.parametrize("engine", ["native", "dense"])
@pytest.mark.parametrize("name,batch,fmt", [("digits_cnn", 16, "fp32"), ("digits_mlp", 32, "fp32"),
                                            ("digits_cnn", 8, "bf16")])
def test_emulator_and_simulate_agree_on_the_same_step(engine, name, batch, fmt):
    model = load_model(os.path.join(ROOT, f"{name}.onnx"))
    x, y = _data(batch)
    check_agree(model, x, y, engine, fmt)


def check_agree(model, x, y, engine, fmt="fp32"):
    """One training step on the emulated device: its accounting equals simulate's constraint design."""
    batch = len(x)
    dev = EmulatedDevice(engine=engine, fmt=fmt)
    session = start(dev, model, CFG)
    before = session.read_state().params
    session.train_step(x, y)
    acc = dev.counters()["accelerator"]
    # bf16 keeps 2 bytes per element: simulate's fp16 precision (energy is not compared)
    cfg = sim.load_config()
    cfg["precision"] = "fp16" if fmt == "bf16" else "fp32"
    x_dev = x if fmt == "fp32" else round_bf16(x)      # what the device trained on
    expected = _simulated(model, before, x_dev, y, cfg)
    assert [lay["name"] for lay in acc["layers"]] == list(expected)
    total = 0
    for lay in acc["layers"]:
        want = expected[lay["name"]]
        for ph in sim.PHASES:
            got, w = lay[ph], want[ph]
            assert got["cycles"] == w["cycles"], (lay["name"], ph)
            assert got["required_macs"] == w["macs"], (lay["name"], ph)
            assert got["buffer_read_bytes"] + got["buffer_write_bytes"] == pytest.approx(w["dram_bytes"], abs=1)
            total += w["cycles"]
        assert lay["estimator"]["exposed_cycles"] == want["fp"]["estimator_exposed_cycles"]
        assert lay["estimator"]["cycles"] == math.ceil(_z_size(model, lay["name"], batch) / cfg["estimator_lanes"])
    upd = math.ceil(sum(model.params[k].size for k in model.trainable_names()) / cfg["pe_cols"])
    assert acc["totals"]["cycles"] == total + upd == acc["last_step"]["cycles"]
    assert acc["totals"]["modelled_seconds"] == pytest.approx(acc["totals"]["cycles"] / (cfg["clock_mhz"] * 1e6))


def _z_size(model, layer, batch):
    """Elements of a layer's pre-activation for `batch` samples."""
    probe = DenseEngine()
    probe.load(model, [])
    shape = tuple(batch if d is None else d for d in model.input_shape)
    node = next(n for n in model.nodes if n.name == layer)
    return probe.forward_values(np.zeros(shape, np.float32))[node.output].size


def test_the_device_states_the_one_spec_in_hello():
    spec = load_spec()
    caps = EmulatedDevice().caps()
    cfg = sim.load_config()
    assert caps["pe_array"] == [spec["pe_rows"], spec["pe_cols"]] == [cfg["pe_rows"], cfg["pe_cols"]]
    assert caps["clock_mhz"] == spec["clock_mhz"] == cfg["clock_mhz"]
    assert caps["estimator_lanes"] == cfg["estimator_lanes"]
    for key in ("weight", "activation", "error"):
        assert caps["buffers"][f"{key}_bytes"] == cfg["buffer_kb"][key] * 1024
    assert caps["buffers"]["staging_bytes"] == spec["staging_kb"] * 1024
