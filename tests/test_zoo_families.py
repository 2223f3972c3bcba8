"""Issue 19: the architectures edge devices run, as torchvision defines them, exported by both
torch exporters with a fixed batch of 1, import and train on the dense and native engines.

Each family is built small (tests/tv_zoo.py: torchvision's own classes, random init, folded so
the file's initializers are the module's parameters). The oracle is torch autograd through the
module itself, independent of edgetune: loss and every gradient, on a batch of another size
than the export's. One `edgetune finetune --epochs 1` per family runs from the CLI."""
import numpy as np
import pytest

from requires import need, need_exporter  # noqa: E402

torch = need("torch")
tv_zoo = need("tv_zoo", "the zoo needs torchvision's model definitions")

import torch_zoo  # noqa: E402
from conftest import assert_close  # noqa: E402
from helpers import digits_like, run_cli  # noqa: E402
from edgetune.runtime import load_model  # noqa: E402
from edgetune.runtime.engines import make_engine  # noqa: E402

NEW = ("mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1", "shufflenet_v2", "densenet")
FAMILIES = NEW + ("resnet18", "mobilenet_v2", "mnasnet0_5")


@pytest.fixture(scope="session")
def tv_export(tmp_path_factory):
    """(family, exporter) -> (module, chw, path), exported once per session with a fixed batch of 1."""
    cache = {}

    def get(name, exporter):
        need_exporter(exporter)
        if (name, exporter) not in cache:
            module, chw = tv_zoo.build(name)
            path = tmp_path_factory.mktemp("tv") / f"{name}-{exporter}.onnx"
            cache[name, exporter] = module, chw, torch_zoo.export(module, chw, path, exporter, batch="fixed")
        return cache[name, exporter]

    return get


@pytest.mark.parametrize("exporter", ["script", "dynamo"])
@pytest.mark.parametrize("name", FAMILIES)
def test_family_trains_like_torch_autograd(tv_export, name, exporter):
    module, chw, path = tv_export(name, exporter)
    model = load_model(path)
    assert model.export_batch == 1
    assert sorted(model.trainable_names()) == sorted(n for n, _ in module.named_parameters()), \
        "the file's initializers must be the module's parameters"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3,) + chw).astype(np.float32)
    y = rng.integers(0, 10, 3)
    ref_loss, ref = torch_zoo.torch_loss_and_grads(module, x, y)
    for engine in ("dense", "native"):
        eng = make_engine(engine)
        eng.load(model)
        loss, grads = eng.loss_and_grads(x, y)
        assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss), f"{engine}: loss {loss} != {ref_loss}"
        assert set(grads) == set(ref)
        for k, g in ref.items():
            assert_close(grads[k], g, what=f"{name}/{exporter} {engine} d{k}")
        step = eng.train_step(x, y)
        assert np.isfinite(step.loss)
        after = {k: v for k, v in eng.get_params().items() if k in ref}
        assert any(not np.array_equal(after[k], model.params[k]) for k in after), f"{engine}: the step changed nothing"


@pytest.mark.parametrize("name", NEW)
def test_family_fine_tunes_from_the_cli(tv_export, tmp_path, name):
    exporter = "script" if NEW.index(name) % 2 == 0 else "dynamo"
    _, chw, path = tv_export(name, exporter)
    data = digits_like(tmp_path / "d.npz", n=12, classes=10, shape=chw)
    out = tmp_path / "tuned.onnx"
    result = run_cli("finetune", path, "--data", data, "--epochs", "1", "--batch-size", "4", "--out", out,
                     "--keep", "last")
    assert result.exit_code == 0, result.output
    assert "epoch 1" in result.output and out.exists()


@pytest.mark.parametrize("name", ["squeezenet1_1", "shufflenet_v2", "mobilenet_v3_small"])
def test_emulator_counts_a_family_as_simulate_does(tv_export, name):
    """Concat, channel shuffle and split, SE gates on the emulated accelerator (hosting the native
    kernels): its MACs, cycles and bytes per layer and phase equal `edgetune simulate`'s."""
    from test_accel_agree import check_agree

    _, chw, path = tv_export(name, "script")
    rng = np.random.default_rng(2)
    check_agree(load_model(path), rng.random((2,) + chw).astype(np.float32), rng.integers(0, 10, 2), "native")
