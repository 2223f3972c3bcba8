"""Fuzzed data (issue 22): hypothesis damages a small .npz of the bundled digits (dtypes, label
values up to 2^64-1, NaN/Inf/3e38 inputs, 0-d and 2-D arrays, length mismatches, lying .npy
headers, bad UTF-8, a zip bomb, byte flips, truncation, FIFOs and devices) and image folders
(16- and 32-bit images, a header claiming 10^9 pixels, truncated and non-image files, FIFOs,
empty classes), then runs `edgetune eval` and `edgetune finetune --epochs 1` on digits_cnn.
Same verdicts and profiles as tests/test_fuzz_models.py."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import fuzz_inputs as F
from requires import need

LONG = F.fuzz_profile() == "long"
# pytest-timeout's limit is per test, and a long profile's test runs for an hour; each run of the
# CLI has its own watchdog (fuzz_inputs.RUN_TIMEOUT, a "hang" verdict)
pytestmark = pytest.mark.timeout(0 if LONG else 600)
_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """An .npz of about 1 MB that decompresses to 1 GiB."""
    return F.zip_bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz")


def run_data_case(corpus: str, case, data: Path, tmp: Path, in_subprocess: bool) -> None:
    out = tmp / "o.onnx"
    F.check(f"{corpus}, eval", case, ["eval", "digits_cnn", "--data", data], tmp, in_subprocess)
    res = F.check(f"{corpus}, finetune", case, ["finetune", "digits_cnn", "--data", data, "--epochs", "1",
                                                "--batch-size", "16", "--out", out], tmp, in_subprocess)
    assert (res.code == 0) == out.exists(), "a fine-tune must write its model exactly when it succeeds"


def _npz_case(mutations, bomb, in_subprocess: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = F.write_data(tmp / "d.npz", mutations, bomb)
        run_data_case("malformed data files", mutations, data, tmp, in_subprocess)


def _image_case(mutations, in_subprocess: bool) -> None:
    need("PIL")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = F.write_image_folder(tmp / "imgs", mutations)
        run_data_case("malformed image folders", mutations, data, tmp, in_subprocess)




@pytest.mark.skipif(LONG, reason="the long profile runs every example in a subprocess")
@settings(max_examples=30, **_SETTINGS)
@given(mutations=F.data_mutations())
def test_malformed_data_in_process(mutations, bomb):
    if any(m[0] == "not_a_file" for m in mutations):
        mutations = [m for m in mutations if m[0] != "not_a_file"] or [("flip", 0, 0, 0)]
    _npz_case(mutations, bomb, in_subprocess=False)


@settings(max_examples=100 if LONG else 2, **_SETTINGS)
@given(mutations=F.data_mutations())
def test_malformed_data_in_subprocesses(mutations, bomb):
    _npz_case(mutations, bomb, in_subprocess=True)


@pytest.mark.skipif(LONG, reason="the long profile runs every example in a subprocess")
@settings(max_examples=10, **_SETTINGS)
@given(mutations=F.image_mutations())
def test_malformed_image_folders_in_process(mutations):
    mutations = [m for m in mutations if m[0] != "not_a_file"] or [("text", 0, 0, 0)]
    _image_case(mutations, in_subprocess=False)


@settings(max_examples=50 if LONG else 1, **_SETTINGS)
@given(mutations=F.image_mutations())
def test_malformed_image_folders_in_subprocesses(mutations):
    _image_case(mutations, in_subprocess=True)
