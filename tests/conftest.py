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
