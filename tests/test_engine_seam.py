"""The engine seam: declared options, the explicit measurement interface, the transport contract."""
import numpy as np
import pytest

from edgetune.firmware_bridge.transport import Transport
from edgetune.runtime import load_model
from edgetune.runtime.engines import engine_class, make_engine
from edgetune.runtime.engines.base import Engine
from edgetune.runtime.errors import UsageError
from edgetune.runtime.trainer import FinetuneConfig, finetune


@pytest.mark.parametrize("name,option", [("native", "device"), ("dense", "threads"), ("device", "dense"),
                                         ("device", "threads"), ("native", "snapshot_every")])
def test_an_option_the_engine_does_not_take_is_a_usage_error(name, option):
    with pytest.raises(UsageError, match=option):
        make_engine(name, **{option: 1})


def test_declared_options_are_the_constructor_arguments():
    import inspect

    for name in ("native", "dense", "device"):
        cls = engine_class(name)
        params = inspect.signature(cls.__init__).parameters
        assert list(cls.options) == [p for p in params if p != "self"], name
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), name


def test_engine_options_through_the_api_are_checked(tmp_path):
    """--dense-kernels with the device engine used to vanish in **_ignored."""
    cfg = FinetuneConfig(model="digits_mlp", engine="dense", engine_options={"dense": True}, epochs=1,
                         out=str(tmp_path / "m.onnx"))
    with pytest.raises(UsageError, match="dense engine has no option dense"):
        finetune(cfg, log=lambda *_: None)
    assert not (tmp_path / "m.onnx").exists()


def test_measurement_interface_defaults_and_native():
    model = load_model("digits_mlp")
    x, y = np.ones((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)
    dense = make_engine("dense")
    dense.load(model)
    assert not dense.has_step_counters and dense.step_counters() is None and dense.step_operands() is None
    assert dense.measure_step(x, y) is None and dense.link_health() == {}
    nat = make_engine("native")
    nat.load(model)
    got = nat.measure_step(x, y)
    assert nat.has_step_counters and got["macs_executed"]["total"] > 0
    assert set(nat.step_operands()) == {n.name for n in model.weight_layers()}
    assert nat.step_counters() == got


def test_transport_is_an_abstract_base_class():
    with pytest.raises(TypeError):
        Transport()

    class Half(Transport):
        def open(self):
            pass

        def close(self):
            pass

    with pytest.raises(TypeError):
        Half()


def test_engine_is_the_base_of_every_engine():
    for name in ("native", "dense", "device"):
        assert issubclass(engine_class(name), Engine)
