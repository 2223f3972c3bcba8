"""`edgetune fleet` on the command line: --help, `fleet init`'s app config, and bad input (one
error line, exit code 1 or 2, no traceback, nothing started)."""
import sys

import numpy as np
import pytest

from helpers import digits_like, run_cli
from edgetune.fleet.cli import fleet
from edgetune.fleet.task import RunSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the fleet itself needs 3.11; these tests of the app file need tomllib
    tomllib = None


@pytest.mark.parametrize("command", [None] + sorted(fleet.commands))
def test_fleet_help(command):
    result = run_cli("fleet", *([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def _no_traceback(result):
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.skipif(tomllib is None, reason="tomllib is Python 3.11+")
def test_init_writes_a_flower_app_with_every_run_setting(tmp_path):
    app = tmp_path / "app"
    result = run_cli("fleet", "init", app, "--rounds", "5", "--strategy", "fedprox", "--mu", "0.01",
                     "--train-layers", "last:2", "--min-nodes", "3", "--out", tmp_path / "f.onnx")
    assert result.exit_code == 0, result.output
    doc = tomllib.loads((app / "pyproject.toml").read_text())
    assert doc["tool"]["flwr"]["app"]["components"] == {"serverapp": "edgetune.fleet.server_app:app",
                                                         "clientapp": "edgetune.fleet.client_app:app"}
    cfg = doc["tool"]["flwr"]["app"]["config"]
    assert set(cfg) == set(RunSettings().to_run_config())
    got = RunSettings.from_run_config(cfg)
    assert (got.rounds, got.strategy, got.proximal_mu, got.train_layers, got.min_nodes) == \
        (5, "fedprox", 0.01, "last:2", 3)
    assert got.out == str(tmp_path / "f.onnx") and got.data == "digits_shifted"

    again = run_cli("fleet", "init", app)
    assert again.exit_code == 2 and "--force" in _no_traceback(again)
    assert run_cli("fleet", "init", app, "--force", "--rounds", "1").exit_code == 0
    assert tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]["rounds"] == 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the fleet commands need Python 3.11 (tested below)")
@pytest.mark.parametrize("args, code, message", [
    (["simulate", "--partition", "shards"], 2, "--partition"),
    (["simulate", "--strategy", "fedprox"], 2, "--mu"),
    (["simulate", "--mu", "0.1"], 2, "fedprox only"),
    (["simulate", "--clients", "0"], 2, "--clients"),
    (["simulate", "--train-layers", "last:9"], 2, "only 4 Conv/Gemm"),
    (["simulate", "--engine", "device", "--strategy", "fedprox", "--mu", "0.1"], 2, "device engine"),
    (["simulate", "--clients", "700"], 1, "cannot give 700 nodes"),
    (["simulate", "--out", "/proc/no/such/folder/f.onnx"], 2, "cannot create the folder /proc/no/such/folder"),
    (["simulate", "no_such_model.onnx", "--data", "digits_shifted"], 1, "no_such_model"),
    (["init", "app", "--dp-noise", "1.0"], 2, "--dp-clip"),
    (["supernode", "--superlink", "127.0.0.1:9", "--data", "missing.npz"], 2, "missing.npz"),
    (["supernode", "--superlink", "nohost", "--data", "digits_shifted"], 2, "HOST:PORT"),
    (["supernode", "--superlink", "127.0.0.1:9", "--data", "digits_shifted", "--insecure",
      "--root-certificates", "ca.crt"], 2, "exclude each other"),
])
def test_bad_fleet_input_is_one_error_line(tmp_path, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    result = run_cli("fleet", *args)
    assert result.exit_code == code, result.output
    assert message in _no_traceback(result)
    assert not (tmp_path / "app").exists() and not list(tmp_path.glob("*.onnx"))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the fleet commands need Python 3.11 (tested below)")
def test_bad_labels_are_caught_before_any_process_starts(tmp_path):
    bad = digits_like(tmp_path / "bad.npz", y=np.full(64, 42))
    result = run_cli("fleet", "simulate", "digits_mlp", "--data", bad, "--clients", "2", "--out", tmp_path / "f.onnx")
    assert result.exit_code == 1
    assert "labels span 42..42" in _no_traceback(result)
    assert not (tmp_path / "f.onnx").exists()


@pytest.mark.parametrize("command", [["simulate"], ["supernode", "--superlink", "h:1", "--data", "digits_shifted"]])
def test_fleet_on_old_python_says_it_needs_3_11(monkeypatch, command):
    monkeypatch.setattr("edgetune.fleet.python_version", lambda: (3, 10))
    result = run_cli("fleet", *command)
    assert result.exit_code == 1
    assert "needs Python 3.11 or newer" in _no_traceback(result)
