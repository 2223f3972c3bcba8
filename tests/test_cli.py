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
    import edgetune._native as nat

    assert f"kernels: {nat.SIMD_ISA} ({nat.VECTOR_FLOATS} floats per vector), module level {nat.LEVEL}" in result.output


def test_bench_json_has_every_documented_field(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "digits_cnn", "--steps", "2", "--batch-size", "8", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "digits_cnn" in result.output and "geomean" in result.output
    doc = json.loads(out.read_text())
    assert set(doc) == {"results", "threads", "cpu", "simd", "background"} and doc["threads"] >= 1
    import edgetune._native as nat

    assert doc["simd"]["isa"] == nat.SIMD_ISA and doc["simd"]["floats"] == nat.VECTOR_FLOATS
    assert doc["simd"]["isa"] in ("avx512", "avx2", "avx", "neon", "baseline") and doc["simd"]["floats"] in (4, 8, 16)
    (row,) = doc["results"]
    for key in ("model", "batch_size", "act_sparsity", "ideal_speedup", "sparse_ms", "dense_native_ms",
                "numpy_ms", "torch_ms", "phase_ms", "activation_bytes", "skip_ceiling", "dense_planned",
                "mac_cost_ratio", "peak_bytes", "process_peak_bytes"):
        assert key in row, key
    assert set(row["peak_bytes"]) == {"sparse", "dense_native", "torch"}
    assert all(v > 0 for v in row["process_peak_bytes"].values())
    ratio = (row["dense_native_ms"] / row["sparse_ms"]) / (row["macs"]["executed_dense_switch"] / row["macs"]["executed"])
    assert abs(row["mac_cost_ratio"] - ratio) < 1e-9
    ab = row["activation_bytes"]
    assert ab["stored"] == ab["values"] + ab["plan"] and ab["plan"] > 0
    assert row["batch_size"] == 8 and set(row["phase_ms"]) == {"fp", "bp", "wg"}
    assert 0.0 < row["act_sparsity"] < 1.0 and row["ideal_speedup"] >= 1.0
    macs = row["macs"]
    assert macs["required"] <= macs["executed"] <= macs["executed_dense_switch"]
    assert abs(row["skip_ceiling"] - macs["executed_dense_switch"] / macs["executed"] / row["ideal_speedup"]) < 1e-9
    assert row["activation_bytes"]["values"] < row["activation_bytes"]["dense"]
    # CPU time beside every wall median; the zero structure of the model and of each layer
    assert set(row["cpu_ms"]) == {"sparse", "dense_native", "numpy", "torch"} and all(v > 0 for v in row["cpu_ms"].values())
    zs = row["zero_structure"]
    assert zs["block_channels"] == nat.VECTOR_FLOATS and 0.0 <= zs["zero_blocks"] <= 1.0 and 0.0 <= zs["zero_pixels"] <= 1.0
    assert abs(zs["sparsity"] - row["act_sparsity"]) < 0.05   # measured by the kernels vs by the dense reference
    layers = {r["name"]: r for r in row["layers"]}
    assert all(set(r["kernels"]) == {"fp", "bp", "wg"} for r in layers.values())
    assert any("zero" in r for r in layers.values())
    # a line per model as it starts, on stderr
    assert "[1/1] digits_cnn: timing" in result.stderr


def test_bench_background_reports_quiet_and_loaded_times(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "digits_mlp", "--steps", "1", "--batch-size", "8", "--no-memory", "--background", "1",
                     "--json", str(out))
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    bg = row["background"]
    assert bg["processes"] == 1 and set(bg["loaded"]) == {"sparse", "dense_native", "torch"}
    assert set(bg["quiet_1_thread"]) == {"sparse", "torch"}
    assert bg["sparse_loaded_over_quiet_1_thread"] == bg["loaded"]["sparse"]["wall_ms"] / bg["quiet_1_thread"]["sparse"]["wall_ms"]
    assert "loaded (1 busy)" in result.output
    import edgetune._native as nat

    assert nat.num_threads() == row["threads"]   # the one-thread turn put the thread count back
    bad = run_cli("bench", "digits_mlp", "--background", "100000")
    assert bad.exit_code == 2 and "--background 100000" in bad.output


def test_background_load_processes_are_gone_afterwards():
    from edgetune.runtime.bench import background_load

    with background_load(2) as procs:
        assert all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
