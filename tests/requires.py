"""What a test needs besides the package: Python test dependencies and system tools.

The one rule (README, "Set up and run"): on a machine with only Python and pip, a test whose
dependency is missing skips, and its reason (shown by -rs) says how to install it; under CI=true
it fails, because .ci/run installs everything (pyproject's test extra, and iverilog/yosys from
apt). `pytest.importorskip` alone would turn a broken torch install into a green suite."""
from __future__ import annotations

import importlib
import os
import shutil

import pytest


def in_ci() -> bool:
    """True when the CI environment variable says so (GitHub Actions and most others set CI=true)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """A dependency named in `reason` is absent: fail under CI, else skip with the reason."""
    if in_ci():
        pytest.fail(f"{reason}; CI installs it (.ci/run) and must run this test", pytrace=False)
    pytest.skip(reason, allow_module_level=True)   # need() may run at a test module's import


def need(module: str, why: str = ""):
    """Import and return `module`; if it cannot be imported, fail under CI, else skip saying why."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
        missing(f"{module} is not importable ({type(exc).__name__}: {exc}){': ' + why if why else ''}; "
                "it is a test dependency: pip install -e '.[test]'")


def need_tool(command: str, install: str) -> str:
    """The path of the system tool `command`; if it is not on PATH, fail under CI, else skip
    naming the `install` command (e.g. 'apt-get install iverilog')."""
    path = shutil.which(command)
    if path is None:
        missing(f"{command} is not installed: {install}")
    return path


def need_exporter(exporter: str):
    """The torch ONNX exporter `exporter` ('script' or 'dynamo'): both need torch, only the
    torch.export-based 'dynamo' one needs onnxscript, so TorchScript cases run without it."""
    torch = need("torch")
    if exporter == "dynamo":
        need("onnxscript", "the torch.export-based exporter needs it")
    return torch
