"""Issue 22, section 3, items 7, 8, 9 and 11: every figure of the summary, `edgetune report` and
the plot means one thing (defined in runtime/summary.py and docs/ARCHITECTURE.md, "The report"),
time per step is wall time with the link's share beside it, `report` reads fleet reports, and
the plot stays readable."""
import json
import re

import numpy as np
import pytest

from helpers import run_cli, tiny_mlp, digits_like
from requires import need


def _percent(text, after):
    return float(re.search(re.escape(after) + r" ?(-?[\d.]+)%", text).group(1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The bundled job on the sparse kernels and on the same kernels run densely, with reports."""
    tmp = tmp_path_factory.mktemp("fig")
    out = {}
    for name, extra in (("sparse", []), ("dense_kernels", ["--dense-kernels"])):
        rep = tmp / f"{name}.json"
        result = run_cli("finetune", "--epochs", "1", "--out", tmp / f"{name}.onnx", "--report", rep, *extra)
        assert result.exit_code == 0, result.output
        shown = run_cli("report", rep)
        assert shown.exit_code == 0, shown.output
        out[name] = (json.loads(rep.read_text()), result.stdout, shown.stdout)
    return out


# -- item 8: one meaning per figure ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["sparse", "dense_kernels"])
def test_stored_memory_is_one_figure_in_the_summary_the_table_and_the_json(runs, name):
    rep, finetune_out, report_out = runs[name]
    ab = rep["activation_bytes"]
    assert ab["stored"] == ab["values"] + ab["plan"]
    layers = [layer["act_bytes"] for layer in rep["layers"]]
    assert sum(b["stored"] for b in layers) == ab["stored"] and sum(b["dense"] for b in layers) == ab["dense"]
    want = round(100 * ab["stored"] / ab["dense"], 1)
    for text in (finetune_out, report_out):
        (line,) = [ln for ln in text.splitlines() if ln.startswith("activation memory kept for backward: ")]
        assert _percent(line, "dense (") == want, line
    (total,) = [ln for ln in report_out.splitlines() if ln.startswith("total")]
    assert total.split()[-1] == f"{want}%", total          # the table's total is the summary's figure


def test_no_negative_percentage_and_over_100_is_explained(runs):
    rep, finetune_out, report_out = runs["dense_kernels"]
    for text in (finetune_out, report_out):
        assert not re.search(r"-\d+(\.\d+)?%", text), text
    pp = rep["macs"]["per_phase"]
    assert pp["executed"]["fp"] > pp["dense"]["fp"]             # the 10-output Gemm pads to a vector
    (line,) = [ln for ln in finetune_out.splitlines() if ln.startswith("MACs executed, % of dense: ")]
    assert _percent(line, "FP") == round(100 * pp["executed"]["fp"] / pp["dense"]["fp"], 1)
    (why,) = [ln for ln in finetune_out.splitlines() if ln.startswith("  over 100% in ")]
    assert "padding lanes (/fc/Gemm)" in why
    ab = rep["activation_bytes"]
    assert ab["stored"] > ab["dense"]                            # every value kept, plus bits and lists
    (mem,) = [ln for ln in finetune_out.splitlines() if ln.startswith("  over 100%: ")]
    assert "the dense kernels keep every value" in mem
    assert f"values and state bits alone {100 * ab['values'] / ab['dense']:.1f}%" in mem


def test_a_figure_under_100_percent_gets_no_note(runs):
    _, finetune_out, _ = runs["sparse"]
    assert "over 100%" not in finetune_out


def test_table_exec_column_is_executed_over_dense(runs):
    rep, _, report_out = runs["sparse"]
    for layer in rep["layers"]:
        (row,) = [ln for ln in report_out.splitlines() if ln.startswith(layer["name"][:24])]
        share = 100 * sum(layer["macs_executed"].values()) / sum(layer["macs_dense"].values())
        assert f"{share:.1f}%" in row.split()[7], row


# -- item 7: time per step is wall time ----------------------------------------------------------------

class _ClockEngine:
    """A fake engine on a fake clock: each step takes 5 ms of wall time, of which the engine
    reports 1 ms of compute (as a device does for its own work)."""

    name = "device"

    def __init__(self, clock):
        self.clock = clock

    def train_step(self, x, y):
        from edgetune.runtime.engines.base import StepResult

        self.clock[0] += 0.005
        return StepResult(loss=1.0, correct=0, batch=len(x), phase_seconds={"fp": 0.0004, "bp": 0.0003,
                                                                              "wg": 0.0002, "update": 0.0001})


def test_time_per_step_is_wall_time_with_the_link_share(monkeypatch):
    from edgetune.runtime import trainer
    from edgetune.runtime.report import step_time
    from edgetune.runtime.summary import summary_lines

    clock = [100.0]
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: clock[0])
    state = trainer.new_fit_state(0)
    x, y = np.zeros((20, 1, 2, 2), np.float32), np.zeros(20, np.int64)
    trainer.local_fit(_ClockEngine(clock), x, y, epochs=2, batch_size=5, state=state)
    st = step_time(state, "device")
    assert st["steps"] == 8 and st["wall_ms"] == pytest.approx(5.0) and st["link_share"] == pytest.approx(0.8)
    assert sum(st["phase_ms"].values()) == pytest.approx(1.0)
    rep = {"macs": {"per_phase": {k: {"fp": 0, "bp": 0, "wg": 0} for k in ("dense", "required", "executed")},
                    "batch": 5}, "layers": [], "steps": 8, "step_time": st}
    (line,) = [ln for ln in summary_lines(rep) if ln.startswith("time per step: ")]
    assert line.startswith("time per step: 5.0 ms wall over 8 steps; the device computed 1.0 ms (FP 0.4, BP 0.3, "
                           "WG 0.2, update 0.1), the link and the host's encoding took the rest (80.0%)"), line
    native = step_time(state, "native")
    assert "link_share" not in native and native["wall_ms"] == pytest.approx(5.0)


def test_a_native_run_reports_its_wall_time(runs):
    rep, finetune_out, report_out = runs["sparse"]
    st = rep["step_time"]
    assert st["steps"] == rep["steps"] == 19 and st["wall_ms"] == pytest.approx(1e3 * st["wall_seconds"] / 19)
    assert st["wall_ms"] >= sum(st["phase_ms"].values())        # the phases are measured inside the step
    for text in (finetune_out, report_out):
        assert f"time per step: {st['wall_ms']:.1f} ms wall over 19 steps (FP " in text


# -- item 9: edgetune report reads fleet reports ---------------------------------------------------------

def _fleet_report():
    from edgetune.fleet.report import build
    from edgetune.fleet.task import RunSettings

    def client(node, name, loss, acc):
        return {"node_id": node, "name": name, "data": "", "num-examples": 300, "train-loss": loss,
                "train-acc": acc, "seconds": 0.2, "tensor-bytes": 76712}

    rounds = []
    for r, (val, loss) in enumerate([(0.887, 1.11), (0.93, 0.32)], 1):
        clients = [client(1, "partition 1", loss, 0.8), client(2, "partition 0", loss, 0.9)]
        rounds.append({"round": r, "clients": clients,
                       "evaluation": [{"node_id": 1, "name": "partition 1", "num-examples": 150, "val-acc": val,
                                       "val-loss": 0.3}],
                       "failures": [], "bytes_down": 153424, "bytes_up": 153424, "record_bytes_down": 155636,
                       "record_bytes_up": 155636, "sampled": 2, "aggregated": True, "train_loss": loss,
                       "train_acc": 0.85, "nodes_val_acc": val, "val_acc": val, "val_loss": 0.3, "seconds": 0.5})
    settings = RunSettings(rounds=2, min_nodes=2)
    return build(settings, ["w", "b"], 76712, {"val_acc": 0.723, "val_loss": 1.45}, rounds,
                 {"path": "fleet.onnx", "ort_max_abs_diff": 4.8e-06, "ort_val_acc": 0.93, "engine_val_acc": 0.93},
                 44.6)


def test_report_reads_a_fleet_report(tmp_path):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(_fleet_report()))
    result = run_cli("report", path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("digits_cnn on digits_shifted: fleet of 2 nodes (iid), 2 rounds of fedavg, engine native; "
                        "val acc 72.3% -> 93.0% (completed)")
    assert "round 0/2  val_acc 72.3%  (the base model, before any round)" in lines
    assert any(ln.startswith("round 2/2  val_acc 93.0%  nodes 2/2  train_loss 0.3200") for ln in lines)
    (node,) = [ln for ln in lines if ln.startswith("partition 1")]
    assert node.split() == ["partition", "1", "300", "0.3200", "80.0%", "93.0%"]
    assert "wrote fleet.onnx (onnxruntime: val acc 93.0%, max abs diff 4.80e-06)" in lines


def test_a_fleet_report_missing_keys_is_one_error(tmp_path):
    rep = _fleet_report()
    del rep["settings"]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(rep))
    result = run_cli("report", path)
    assert result.exit_code == 1 and "not an edgetune fleet report (missing settings)" in result.output


def test_a_fleet_report_plots(tmp_path):
    need("matplotlib")
    from edgetune.runtime.plot import figure

    fig = figure(_fleet_report())
    loss, acc = fig.axes
    assert loss.get_title() == "loss per round" and acc.get_title() == "accuracy per round"
    assert list(acc.lines[0].get_ydata()) == pytest.approx([72.3, 88.7, 93.0])
    path = tmp_path / "f.json"
    path.write_text(json.dumps(_fleet_report()))
    result = run_cli("report", path, "--plot", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


# -- item 11: the plot -------------------------------------------------------------------------------------

def test_layer_labels_are_short_distinct_and_readable(runs):
    need("matplotlib")
    from edgetune.runtime.plot import figure, layer_labels

    assert layer_labels(["/features/features.0/Conv", "/features/features.3/Conv", "/fc/Gemm"]) == \
        ["0 features.0", "1 features.3", "2 fc"]
    assert layer_labels(["/a/x/Conv", "/b/x/Conv"]) == ["0 a/x", "1 b/x"]        # same last part: keep the path
    fig = figure(runs["sparse"][0])
    for ax in fig.axes[2:]:
        ticks = ax.get_xticklabels()
        assert [t.get_text() for t in ticks] == ["0 conv1", "1 conv2", "2 conv3", "3 fc"]
        assert all(t.get_fontsize() >= 9 for t in ticks)


def _with_losses(rep, losses):
    return {**rep, "history": [{**rep["history"][0], "epoch": i + 1, "loss": v, "val_loss": v}
                               for i, v in enumerate(losses)]}


def test_a_first_epoch_spike_does_not_flatten_the_loss_curve(runs):
    need("matplotlib")
    from edgetune.runtime.plot import figure

    rep = runs["sparse"][0]
    spike = figure(_with_losses(rep, [2.87, 0.56, 0.34, 0.22, 0.13, 0.11])).axes[0]
    assert spike.get_yscale() == "log" and "log scale" in spike.get_ylabel()
    assert "the values span 26x" in spike.get_title()
    flat = figure(_with_losses(rep, [0.9, 0.5, 0.3])).axes[0]
    assert flat.get_yscale() == "linear" and flat.get_ylabel() == "loss"


def test_the_mac_panel_shows_what_the_engine_executed(runs):
    need("matplotlib")
    from edgetune.runtime.plot import figure

    rep = runs["dense_kernels"][0]
    mac = figure(rep).axes[3]
    required, executed = mac.containers
    assert executed.get_label() == "the dense kernels executed"
    for layer, bar in zip(rep["layers"], executed.patches):
        share = 100 * sum(layer["macs_executed"].values()) / sum(layer["macs_dense"].values())
        assert bar.get_height() == pytest.approx(share)
    assert mac.get_ylim()[1] > max(b.get_height() for b in executed.patches)     # 140% is not cut off


def test_a_device_report_keeps_the_devices_per_layer_counts(tmp_path):
    """Item 11's device MAC panel and item 8 for the device: each layer's executed MACs and bytes
    come from the device's last step, and add up to the report's totals."""
    model, data = tiny_mlp(tmp_path / "m.onnx"), digits_like(tmp_path / "d.npz", n=48)
    rep_path = tmp_path / "d.json"
    result = run_cli("finetune", model, "--data", data, "--epochs", "1", "--engine", "device",
                     "--out", tmp_path / "d.onnx", "--report", rep_path)
    assert result.exit_code == 0, result.output
    rep = json.loads(rep_path.read_text())
    for kind in ("dense", "required", "executed"):
        for ph in ("fp", "bp", "wg"):
            assert sum(layer[f"macs_{kind}"][ph] for layer in rep["layers"]) == rep["macs"]["per_phase"][kind][ph]
    assert sum(layer["act_bytes"]["stored"] for layer in rep["layers"]) == rep["activation_bytes"]["stored"]
    assert 0 <= rep["step_time"]["link_share"] <= 1
    assert f"({100 * rep['step_time']['link_share']:.1f}%)" in result.stdout
    if need("matplotlib"):
        from edgetune.runtime.plot import figure

        _, executed = figure(rep).axes[3].containers
        assert executed.get_label() == "the device executed (its last step)"
