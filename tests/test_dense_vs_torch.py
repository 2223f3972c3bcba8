"""The dense reference engine against PyTorch autograd, on models from both exporters."""
import numpy as np
import pytest

from requires import need, need_exporter  # noqa: E402

torch = need("torch")

from conftest import assert_close  # noqa: E402
import torch_zoo  # noqa: E402
from edgetune.runtime import load_model, compute_gradients  # noqa: E402


@pytest.mark.parametrize("exporter", ["script", "dynamo"])
@pytest.mark.parametrize("name", sorted(torch_zoo.ZOO))
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_dense_matches_autograd(zoo_export, name, exporter, loss):
    need_exporter(exporter)
    module, chw, path = zoo_export(name, exporter)
    model = load_model(path)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6,) + chw).astype(np.float32)
    classes = module(torch.from_numpy(x)).shape[1]
    y = rng.integers(0, classes, 6)
    ref_loss, ref_grads = torch_zoo.torch_loss_and_grads(module, x, y, loss)
    got_loss, grads = compute_gradients(model, x, y, engine="dense", loss=loss)
    assert abs(got_loss - ref_loss) <= 1e-4 * abs(ref_loss)
    assert set(grads) == set(ref_grads), "gradients must be keyed by the torch/ONNX parameter names"
    for k, g in ref_grads.items():
        assert grads[k].shape == model.params[k].shape
        assert_close(grads[k], g, what=f"{name}/{exporter} d{k}")
