"""Test dependencies that may be absent on a developer's machine but never in CI.

`pytest.importorskip` alone turns a broken torch install into a green suite. Here a missing
test dependency skips (with the reason in the -rs report) only outside CI; with CI=true it is
a failure, because pyproject's test extra installs it there."""
from __future__ import annotations

import importlib
import os

import pytest


def in_ci() -> bool:
    """True when the CI environment variable says so (GitHub Actions and most others set CI=true)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(module: str, why: str = ""):
    """Import and return `module`; if it cannot be imported, fail under CI, else skip saying why."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
        msg = f"{module} is not importable ({type(exc).__name__}: {exc}){': ' + why if why else ''}"
        if in_ci():
            pytest.fail(f"{msg}; it is a test dependency (pip install -e '.[test]') and CI must run these tests",
                        pytrace=False)
        pytest.skip(msg)


def need_exporter(exporter: str):
    """The torch ONNX exporter `exporter` ('script' or 'dynamo'): both need torch, only the
    torch.export-based 'dynamo' one needs onnxscript, so TorchScript cases run without it."""
    torch = need("torch")
    if exporter == "dynamo":
        need("onnxscript", "the torch.export-based exporter needs it")
    return torch
