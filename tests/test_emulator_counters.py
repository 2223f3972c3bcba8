"""Issue 5: one definition of the MAC counts.

For the same step (same parameters, same batch) the emulator's accelerator counters
(constraint design: dense / required / executed per layer and phase) equal the native
engine's own kernel counters (`step_counters()`), and the required MACs equal
`runtime.simulate`'s constraint-design MACs (and its dense design's MACs the dense
ones). The emulator runs in process (no pty), so this is fast.
"""
import os

import numpy as np
import pytest

from edgetune.firmware_bridge.accel_model import PE_COLS, PE_ROWS
from edgetune.firmware_bridge.device_core import EmulatedDevice
from edgetune.runtime import load_model
from edgetune.runtime import simulate as sim
from edgetune.runtime.engines import make_engine
from edgetune.runtime.engines.dense import DenseEngine
from edgetune.runtime.optim import OptimizerConfig

from test_emulator import start


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")
CFG = OptimizerConfig(name="sgd", lr=0.05)
PHASES = ("fp", "bp", "wg")
PE_FILL = PE_ROWS + PE_COLS


def _data(n):
    d = np.load(os.path.join(ROOT, "digits_source.npz"))
    return d["x"][:n].astype(np.float32), d["y"][:n]


def _simulate_macs(model, params, trainable, x, y):
    """runtime.simulate's per-layer MACs for one batch: simulate_step on the values and gradients
    of that batch (exactly what `edgetune simulate` records with DenseEngine.forward_backward_values)."""
    eng = DenseEngine()
    eng.load(model, trainable)
    eng.set_params(params)
    _, _, vals, dvals = eng.forward_backward_values(x, y)
    rows = sim.simulate_step(model, vals, dvals, trainable, sim.load_config())
    return {r["name"]: {des: {ph: r["designs"][des][ph]["macs"] for ph in PHASES}
                        for des in ("constraint", "dense")} for r in rows}


def _emulator_step(model, x, y, engine="native", steps=1):
    dev = EmulatedDevice(engine=engine)
    session = start(dev, model, CFG)
    for _ in range(steps):
        session.train_step(x, y)
    return dev, dev.counters()["accelerator"]


@pytest.mark.parametrize("name,batch", [("digits_cnn", 16), ("digits_mlp", 32)])
def test_emulator_macs_equal_native_step_counters_and_simulate(name, batch, monkeypatch):
    model = load_model(os.path.join(ROOT, f"{name}.onnx"))
    trainable = model.trainable_names()
    x, y = _data(batch)
    # hosting the native engine, the accelerator model must not run a dense pass of its own
    calls = []
    orig = DenseEngine._forward
    monkeypatch.setattr(DenseEngine, "_forward", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    dev, acc = _emulator_step(model, x, y)
    assert calls == [] and dev.engine_name == "native"
    monkeypatch.undo()
    assert acc["counter_source"] == "hosted engine kernel counters" and acc["totals"]["steps"] == 1

    ref = make_engine("native")
    ref.load(model, trainable, CFG)
    ref.train_step(x, y)
    native = ref.step_counters()
    simulated = _simulate_macs(model, model.params, trainable, x, y)

    emu = {lay["name"]: lay for lay in acc["layers"]}
    assert list(emu) == [lay["name"] for lay in native["layers"]] == list(simulated)
    for lay in native["layers"]:
        e = emu[lay["name"]]
        for ph in PHASES:
            got = {k: e[ph][f"{k}_macs"] for k in ("dense", "required")}
            assert got == {k: lay[ph][k] for k in ("dense", "required")}, (lay["name"], ph)
            # the modelled array multiplies exactly the required pairs, not what the CPU tiles ran
            assert e[ph]["executed_macs"] == lay[ph]["required"]
            assert e[ph]["skipped_macs"] == lay[ph]["dense"] - lay[ph]["required"]
            assert e[ph]["required_macs"] == simulated[lay["name"]]["constraint"][ph], (lay["name"], ph)
            assert e[ph]["dense_macs"] == simulated[lay["name"]]["dense"][ph], (lay["name"], ph)
    phases = acc["totals"]["phases"]
    for ph in PHASES:
        assert phases[ph]["dense_macs"] == native["macs_dense"][ph]
        assert phases[ph]["required_macs"] == native["macs_required"][ph]
        assert phases[ph]["executed_macs"] == native["macs_required"][ph]
        assert acc["last_step"]["phases"][ph] == phases[ph]
    assert acc["totals"]["required_macs"] == native["macs_required"]["total"]
    assert acc["totals"]["executed_macs"] == native["macs_required"]["total"]
    # stored = values (kept values and state bits) + plan (position lists), PROTOCOL.md section 12;
    # the last step's figures per layer are the hosted engine's (the report takes them from there)
    assert acc["totals"]["activation_store_bytes"] == native["activation_bytes"]
    assert acc["last_step"]["activation_store"] == native["activation_bytes"]
    last_layers = {lay["name"]: lay for lay in acc["last_step"]["layers"]}
    for lay in native["layers"]:
        assert last_layers[lay["name"]]["act_bytes"] == lay["act_bytes"]
        for ph in PHASES:
            got = last_layers[lay["name"]][ph]
            assert {k: got[f"{k}_macs"] for k in ("dense", "required")} == {k: lay[ph][k] for k in ("dense", "required")}
            assert got["executed_macs"] == lay[ph]["required"]
    # the derived counters are there and consistent
    for e in emu.values():
        for ph in PHASES:
            r = e[ph]
            if r["dense_macs"]:
                assert r["cycles"] >= PE_FILL and r["buffer_read_bytes"] > 0 and r["buffer_write_bytes"] > 0
            else:
                assert r["cycles"] == r["buffer_read_bytes"] == r["buffer_write_bytes"] == 0
        assert e["estimator"]["hidden"] == (e["estimator"]["exposed_steps"] == 0)


def test_counters_accumulate_over_steps_and_dense_host_uses_layer_table():
    model = load_model(os.path.join(ROOT, "digits_cnn.onnx"))
    trainable = model.trainable_names()
    x, y = _data(8)
    _, two = _emulator_step(model, x, y, steps=2)
    ref = make_engine("native")
    ref.load(model, trainable, CFG)
    ref.train_step(x, y)
    first = ref.step_counters()
    ref.train_step(x, y)
    second = ref.step_counters()
    for ph in PHASES:
        for k in ("required", "executed"):
            assert two["totals"]["phases"][ph][f"{k}_macs"] == first["macs_required"][ph] + second["macs_required"][ph]
        assert two["last_step"]["phases"][ph]["required_macs"] == second["macs_required"][ph]
    # hosting the dense engine: the analytic definition (layer_table)
    _, dense = _emulator_step(model, x, y, engine="dense")
    assert dense["counter_source"].startswith("layer_stats.layer_table")
    one = {lay["name"]: lay for lay in _emulator_step(model, x, y)[1]["layers"]}
    for lay in dense["layers"]:
        for ph in PHASES:
            assert lay[ph]["required_macs"] == lay[ph]["executed_macs"] == one[lay["name"]][ph]["required_macs"]
            assert lay[ph]["dense_macs"] == one[lay["name"]][ph]["dense_macs"]
