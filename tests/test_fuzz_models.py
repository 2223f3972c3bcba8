"""Fuzzed models (issue 22): hypothesis mutates the bundled ONNX models (byte flips, truncation,
deleted nodes and initializers, absurd attributes, dims 0/-1/2^31, wrong dtypes, cycles, duplicate
names, opsets 0/1/99, NaN weights, inserted nodes, and combinations) and runs `edgetune info` and
`edgetune finetune --epochs 1` on each. Every run must end in success or one clean `error:` line
(tests/fuzz_inputs.py says exactly what passes); a fine-tune that succeeds must have written a
model whose onnxruntime outputs are finite, one that fails must have written nothing.

Profiles (tests/conftest.py): ci and dev run a few examples in-process (click's CliRunner) and a
few in subprocesses (segfaults, hangs, memory); long (HYPOTHESIS_PROFILE=long) runs every example
in a subprocess: EDGETUNE_FUZZ_LOG=fuzz.jsonl HYPOTHESIS_PROFILE=long python -m pytest
tests/test_fuzz_models.py tests/test_fuzz_data.py, then python tests/fuzz_inputs.py table fuzz.jsonl."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fuzz_inputs as F

LONG = F.fuzz_profile() == "long"
# pytest-timeout's limit is per test, and a long profile's test runs for an hour; each run of the
# CLI has its own watchdog (fuzz_inputs.RUN_TIMEOUT, a "hang" verdict)
pytestmark = pytest.mark.timeout(0 if LONG else 600)
_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))


@functools.lru_cache(maxsize=None)
def _base(name: str) -> bytes:
    from edgetune import models

    return models.model_path(name).read_bytes()


@pytest.fixture(scope="module")
def data_for(tmp_path_factory):
    """input shape (C, H, W) -> a small .npz of the bundled data for that shape (48 train, 16 val)."""
    from edgetune import models

    folder = tmp_path_factory.mktemp("fuzz-data")
    out = {}
    for name in ("digits_shifted", "digits32_color"):
        d = models.load_dataset(name)
        path = folder / f"{name}.npz"
        np.savez(path, x=d["x"][:48], y=d["y"][:48], x_val=d["x_val"][:16], y_val=d["y_val"][:16])
        out[tuple(d["x"].shape[1:])] = path
    return out


def _shape_of(name: str) -> tuple:
    from edgetune import models

    return tuple(models.model_info(name)["input_shape"][1:])


def run_model_case(case, data_for, in_subprocess: bool) -> None:
    """info and finetune --epochs 1 on the mutated model of `case` = (base, mutations)."""
    base, mutations = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, out = tmp / "m.onnx", tmp / "o.onnx"
        model.write_bytes(F.mutate_model(_base(base), mutations))
        F.check("mutated models, info", case, ["info", model], tmp, in_subprocess)
        res = F.check("mutated models, finetune", case,
                      ["finetune", model, "--data", data_for[_shape_of(base)], "--epochs", "1", "--batch-size", "16",
                       "--out", out], tmp, in_subprocess)
        if res.code == 0:
            _assert_finite_outputs(out, data_for[_shape_of(base)])
        else:
            assert not out.exists(), "a failed fine-tune left its output file"


def _assert_finite_outputs(path: Path, data: Path) -> None:
    from edgetune.runtime.onnx_export import ort_logits

    with np.load(data) as d:
        x = d["x_val"]
    assert np.isfinite(ort_logits(str(path), x)).all(), f"{path}: a written model gives non-finite outputs"


@pytest.mark.skipif(LONG, reason="the long profile runs every example in a subprocess")
@settings(max_examples=30, **_SETTINGS)
@given(case=F.model_mutations())
def test_mutated_models_in_process(case, data_for):
    run_model_case(case, data_for, in_subprocess=False)


@settings(max_examples=300 if LONG else 2, **_SETTINGS)
@given(case=F.model_mutations())
def test_mutated_models_in_subprocesses(case, data_for):
    run_model_case(case, data_for, in_subprocess=True)
