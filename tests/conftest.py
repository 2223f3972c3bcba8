import numpy as np
import pytest


def assert_close(actual, expected, rtol=1e-4, what=""):
    """Relative comparison scaled by the reference's magnitude (float summation order differs)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g} > {rtol} x {scale:.3g}"


@pytest.fixture(autouse=True)
def _native_threads_restored():
    """Tests may set the kernels' thread count (a process-wide setting): put it back."""
    import edgetune._native as nat

    before = nat.num_threads()
    yield
    nat.set_num_threads(before)


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


def _hypothesis_profiles():
    """ci: derandomised (the same examples on every run) with a deadline; dev: random;
    long: a deeper search to run by hand; qemu: ci's examples untimed (emulated aarch64).
    HYPOTHESIS_PROFILE picks one; CI=true picks ci."""
    import os

    from hypothesis import HealthCheck, settings

    slow = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", derandomize=True, deadline=20000, print_blob=True, suppress_health_check=slow)
    settings.register_profile("dev", deadline=None, suppress_health_check=slow)
    settings.register_profile("long", deadline=None, max_examples=1000, suppress_health_check=slow)
    # qemu: ci's examples without its deadline, for the aarch64 run under qemu-user (tools/arm64/),
    # where a time limit would measure the emulator
    settings.register_profile("qemu", derandomize=True, deadline=None, print_blob=True, suppress_health_check=slow)
    default = "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default))


_hypothesis_profiles()
