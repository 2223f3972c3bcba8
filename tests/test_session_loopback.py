"""The device session (firmware_bridge/session.py) over the in-process loopback transport: the
real client and recovery logic against the emulated device, with link faults and resets, and
no pty. Each run must end with the hosted engine's weights exactly, every step run once."""
import numpy as np
import pytest

from edgetune import models
from edgetune.firmware_bridge.client import DeviceClient
from edgetune.firmware_bridge.codecs import encode_model_descriptor
from edgetune.firmware_bridge.device_core import EmulatedDevice
from edgetune.firmware_bridge.errors import IoTimeoutError, TransportClosedError
from edgetune.firmware_bridge.faults import FaultInjector
from edgetune.firmware_bridge.loopback import LoopbackTransport
from edgetune.firmware_bridge.session import DeviceSession, DeviceState
from edgetune.runtime import load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig, make_optimizer

CFG = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9)


@pytest.fixture(scope="module")
def mlp():
    return load_model("digits_mlp")


@pytest.fixture(scope="module")
def batches():
    """Six batches of 16 of the bundled fine-tuning data."""
    d = models.load_dataset("digits_shifted")
    return [(d["x"][i:i + 16].astype(np.float32), d["y"][i:i + 16]) for i in range(0, 96, 16)]


def _session(dev, model, faults=None, **kw):
    t = LoopbackTransport(dev, faults)
    t.open()
    client = DeviceClient(t, timeout=0.05, max_timeout=0.2, retries=12)
    s = DeviceSession(client, **kw)
    s.start(encode_model_descriptor(model, model.trainable_names(), CFG, "cross_entropy"),
            DeviceState(dict(model.params), make_optimizer(CFG).state_dict(), 0))
    return s


def _reference(model, batches):
    ref = make_engine("native")
    ref.load(model, optimizer=CFG)
    losses = [ref.train_step(x, y).loss for x, y in batches]
    return losses, ref.get_params()


@pytest.mark.parametrize("faults,reset_after", [(None, None), (0.05, None), (None, 3), (0.03, 3)],
                         ids=["clean", "faults", "resets", "faults_and_resets"])
def test_training_through_the_loopback_equals_the_hosted_engine(mlp, batches, faults, reset_after):
    dev = EmulatedDevice(reset_after=reset_after, seed=11)
    s = _session(dev, mlp, FaultInjector(faults, seed=5, max_delay=0.02) if faults else None, snapshot_every=4)
    losses = [s.train_step(x, y).loss for x, y in batches]
    params = s.read_state().params
    ref_losses, ref_params = _reference(mlp, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    for k, v in ref_params.items():
        np.testing.assert_allclose(params[k], v, rtol=0, atol=1e-5, err_msg=k)
    link = s.link_counters()
    assert link["steps"] == len(batches) and s.step == len(batches)
    if faults:
        assert dev.link["duplicates"] + link["retries"] > 0
    if reset_after:
        assert link["device_resets"] > 0 and link["replayed_steps"] > 0
    else:   # without resets the device ran every step exactly once
        assert dev.counters()["accelerator"]["totals"]["steps"] == len(batches)


def test_state_round_trip_and_counters(mlp, batches):
    s = _session(EmulatedDevice(), mlp)
    x, y = batches[0]
    s.train_step(x, y)
    state = s.read_state()
    assert state.step == 1 and state.optimizer["t"] == 1
    changed = {k: v + 1 for k, v in state.params.items()}
    s.write_state(params=changed)
    for k, v in s.read_state().params.items():
        np.testing.assert_array_equal(v, changed[k])
    assert s.read_counters()["step"] == 1 and s.last_step_macs()["batch"] == len(x)


def test_loopback_keeps_the_transport_contract():
    t = LoopbackTransport(EmulatedDevice())
    with pytest.raises(TransportClosedError):
        t.read(1, 0.1)
    t.open()
    for bad in (None, 0, -1.0, float("inf")):
        with pytest.raises(ValueError):
            t.write(b"\x00", bad)
    with pytest.raises(IoTimeoutError):
        t.read(1, 0.05)         # nothing was asked: nothing comes
    t.close()
    t.close()
