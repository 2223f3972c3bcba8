"""CLI surface: --help for every command, and the main job's report on the bundled defaults."""
import json

import pytest

from helpers import run_cli
from edgetune.runtime.cli import cli


@pytest.mark.parametrize("command", [None] + sorted(cli.commands))
def test_help(command):
    args = ([command] if command else []) + ["--help"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_models_lists_bundled_models_and_data():
    result = run_cli("models")
    assert result.exit_code == 0
    for name in ("digits_mlp", "digits_cnn", "digits_shifted"):
        assert name in result.output


def test_info_shows_constraint_rules():
    result = run_cli("info", "digits_cnn")
    assert result.exit_code == 0, result.output
    assert "ReLU: G = A" in result.output and "Conv" in result.output


def test_bench_json_has_every_documented_field(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "digits_cnn", "--steps", "2", "--batch-size", "8", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "digits_cnn" in result.output and "geomean" in result.output
    doc = json.loads(out.read_text())
    assert set(doc) == {"results", "threads", "cpu"} and doc["threads"] >= 1
    (row,) = doc["results"]
    for key in ("model", "batch_size", "act_sparsity", "ideal_speedup", "sparse_ms", "dense_native_ms",
                "numpy_ms", "torch_ms", "phase_ms", "activation_bytes", "skip_ceiling", "dense_planned"):
        assert key in row, key
    assert row["batch_size"] == 8 and set(row["phase_ms"]) == {"fp", "bp", "wg"}
    assert 0.0 < row["act_sparsity"] < 1.0 and row["ideal_speedup"] >= 1.0
    macs = row["macs"]
    assert macs["required"] <= macs["executed"] <= macs["executed_dense_switch"]
    assert abs(row["skip_ceiling"] - macs["executed_dense_switch"] / macs["executed"] / row["ideal_speedup"]) < 1e-9
    assert row["activation_bytes"]["stored"] < row["activation_bytes"]["dense"]
