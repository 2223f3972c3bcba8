import numpy as np
import pytest


def assert_close(actual, expected, rtol=1e-4, what=""):
    """Relative comparison scaled by the reference's magnitude (float summation order differs)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g} > {rtol} x {scale:.3g}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def zoo_export(tmp_path_factory):
    """Export each torch zoo model once per session: zoo_export(name, exporter) -> (module, chw, path)."""
    cache = {}

    def get(name, exporter):
        if (name, exporter) not in cache:
            import torch_zoo

            module, chw = torch_zoo.build(name)
            path = tmp_path_factory.mktemp("zoo") / f"{name}-{exporter}.onnx"
            cache[name, exporter] = (module, chw, torch_zoo.export(module, chw, path, exporter))
        return cache[name, exporter]

    return get
