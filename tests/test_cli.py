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
