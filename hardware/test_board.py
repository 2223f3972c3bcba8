"""The ULX3S board top elaborates with the whole device under it (yosys hierarchy check: every
module found, every port connected by a name the module has), and the pin file places every top
port. Fast; the synthesis, place-and-route and bitstream themselves are
`python -m edgetune.hardware.pnr` (tens of minutes, docs/HARDWARE.md)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

HW = Path(__file__).resolve().parent


def test_board_top_elaborates_and_every_port_has_a_pin(tmp_path):
    from edgetune.hardware.sim import CORE_RTL, DEVICE_RTL, RTL, picorv32_source

    if shutil.which("yosys") is None:
        pytest.skip("yosys is not installed (apt-get install yosys)")
    files = [RTL / f for f in dict.fromkeys(CORE_RTL + DEVICE_RTL)] + [picorv32_source(), HW / "board" / "ulx3s_top.v"]
    (tmp_path / "firmware.hex").write_text("00000013\n")
    (tmp_path / "bootcfg.hex").write_text("00000000\n")
    script = "\n".join([*(f"read_verilog {f}" for f in files), "hierarchy -check -top ulx3s_top"])
    r = subprocess.run(["yosys", "-q", "-p", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:] or r.stdout[-3000:]
    top = (HW / "board" / "ulx3s_top.v").read_text()
    header = top[top.index("module ulx3s_top"):top.index(");")]
    ports = re.findall(r"(?:input|output)\s+wire\s+(?:\[(\d+):0\]\s+)?(\w+)", header)
    pins = set(re.findall(r'LOCATE COMP "([^"]+)"', (HW / "board" / "ulx3s.lpf").read_text()))
    for width, name in ports:
        bits = [f"{name}[{i}]" for i in range(int(width) + 1)] if width else [name]
        assert all(b in pins for b in bits), f"{name} has no LOCATE in ulx3s.lpf"
