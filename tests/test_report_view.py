"""Issue 12, item 5: show the point of the tool. The summary after finetune, `edgetune report`
with its per-layer table, the optional plot, and a device report carrying the device's own
executed MAC count."""
import json
import os
import sys

import pytest

from helpers import run_cli
from requires import need


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    rep = tmp / "r.json"
    result = run_cli("finetune", "--epochs", "2", "--out", tmp / "o.onnx", "--report", rep)
    assert result.exit_code == 0, result.output
    return json.loads(rep.read_text()), rep, result.output


def _pct(text, phase):
    return float(text.split(f"{phase} ")[1].split("%")[0])


def test_finetune_prints_the_savings_summary(native_run):
    rep, _, output = native_run
    (macs,) = [ln for ln in output.splitlines() if ln.startswith("MACs executed, % of dense: ")]
    pp = rep["macs"]["per_phase"]
    for ph in ("fp", "bp", "wg"):
        want = 100 * pp["executed"][ph] / pp["dense"][ph]
        assert abs(_pct(macs.split("(")[0], ph.upper()) - want) < 0.06, (ph, macs)
        assert 0 < want < 100
    (mem,) = [ln for ln in output.splitlines() if ln.startswith("activation memory kept for backward: ")]
    assert "stored = " in mem and " non-zero lists vs " in mem and " dense (" in mem
    ab = rep["activation_bytes"]
    assert ab["stored"] < ab["dense"]
    (tps,) = [ln for ln in output.splitlines() if ln.startswith("time per step: ")]
    assert f"ms wall over {rep['steps']} steps" in tps and rep["steps"] == 2 * 19
    wall = 1e3 * rep["step_time"]["wall_seconds"] / rep["steps"]
    assert float(tps.split(": ")[1].split(" ms")[0]) == pytest.approx(wall, abs=0.06)


def test_report_command_prints_the_per_layer_table(native_run):
    rep, path, _ = native_run
    result = run_cli("report", path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "MACs dense" in out and "required" in out and "executed" in out and "act KiB" in out
    for layer in rep["layers"]:
        (row,) = [ln for ln in out.splitlines() if ln.startswith(layer["name"][:24])]
        assert f"{sum(layer['macs_dense'].values()):,}" in row
        assert f"{sum(layer['macs_required'].values()):,}" in row
        assert f"{sum(layer['macs_executed'].values()):,}" in row
        assert f"{100 * layer['act_sparsity']:.1f}%" in row
    (total,) = [ln for ln in out.splitlines() if ln.startswith("total")]
    assert f"{sum(sum(layer['macs_dense'].values()) for layer in rep['layers']):,}" in total
    assert f"{rep['macs']['executed']:,}" in total            # the same batch, the same kernels' count
    assert "<- kept" in out and "MACs executed, % of dense:" in out


def test_layer_bytes_follow_the_storage_rules(native_run):
    rep, _, _ = native_run
    relu = [layer for layer in rep["layers"] if layer["activation"] == "Relu"]
    for layer in relu:
        ab = layer["act_bytes"]
        assert ab["stored"] < ab["dense"]
        kept = 1 - layer["act_sparsity"]
        # values: 1 mask bit + 4 bytes per non-zero; stored adds the plan's position lists
        assert ab["values"] == pytest.approx(ab["dense"] / 32 + ab["dense"] * kept, rel=0.01)
        assert ab["stored"] == ab["values"] + ab["plan"]


def test_report_plot_draws_a_png_with_the_umask_mode(native_run, tmp_path):
    need("matplotlib")
    _, path, _ = native_run
    png = tmp_path / "plots" / "r.png"
    old = os.umask(0o022)
    try:
        result = run_cli("report", path, "--plot", png)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    assert (png.stat().st_mode & 0o777) == 0o644


def test_plot_without_matplotlib_names_the_extra(native_run, tmp_path, monkeypatch):
    _, path, _ = native_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib -> ImportError
    result = run_cli("report", path, "--plot", tmp_path / "r.png")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        'error: plotting needs matplotlib: pip install ".[plots]" in the edgetune checkout (or pip install matplotlib)']
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("content,needle", [
    ("not json", "not a readable JSON report"),
    ('{"a": 1}', "not an edgetune report of finetune --report or fleet simulate --report (missing model")])
def test_report_of_something_else_is_one_error(tmp_path, content, needle):
    bad = tmp_path / "x.json"
    bad.write_text(content)
    result = run_cli("report", bad)
    assert result.exit_code == 1 and needle in result.output and "Traceback" not in result.output


def test_device_report_counts_what_the_device_executed(tmp_path):
    rep_path = tmp_path / "d.json"
    result = run_cli("finetune", "--engine", "device", "--epochs", "1", "--out", tmp_path / "d.onnx",
                     "--report", rep_path)
    assert result.exit_code == 0, result.output
    rep = json.loads(rep_path.read_text())
    macs = rep["macs"]
    assert macs["executed"] < macs["dense"]
    assert macs["required"] <= macs["executed"]
    last = rep["device"]["accelerator"]["last_step"]["phases"]
    for ph in ("fp", "bp", "wg"):
        assert macs["per_phase"]["executed"][ph] == last[ph]["executed_macs"]
        assert macs["per_phase"]["dense"][ph] == last[ph]["dense_macs"]
    assert macs["batch"] == 599 - 18 * 32          # the last training step's batch
    assert "device counters" in macs["executed_source"]
    assert "MACs executed, % of dense: " in result.output
