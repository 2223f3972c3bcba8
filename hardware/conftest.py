"""Starts the yosys run of hardware/test_synth.py in a child process as soon as that test is
collected, so that it runs beside the simulations (one core each on a 2-core machine) instead
of after them; the `synth_report` fixture waits for it. `firmware_tools` guards the tests that
build the device firmware."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_RUN: dict = {}


def pytest_collection_modifyitems(session, config, items):
    if shutil.which("yosys") is None or not any(item.path.name == "test_synth.py" for item in items):
        return
    out = Path(tempfile.mkdtemp(prefix="edgetune-synth-")) / "report.json"
    _RUN["out"] = out
    _RUN["proc"] = subprocess.Popen([sys.executable, "-m", "edgetune.hardware.synth", "--json", str(out)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def pytest_unconfigure(config):
    proc = _RUN.get("proc")
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def synth_report() -> dict:
    """hardware.synth.report(2, 2) of the child started at collection."""
    proc = _RUN.get("proc")
    if proc is None:
        pytest.skip("yosys is not installed (apt-get install yosys)")
    _out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, f"python -m edgetune.hardware.synth failed: {err[-2000:]}"
    return json.loads(_RUN["out"].read_text())


@pytest.fixture
def firmware_tools():
    """The RISC-V cross compiler the device firmware is built with: a skip naming the install
    command on a machine without it, a failure under CI (.ci/run installs it)."""
    if shutil.which("riscv64-unknown-elf-gcc") is None:
        msg = "the RISC-V cross compiler is not installed: apt-get install gcc-riscv64-unknown-elf"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
