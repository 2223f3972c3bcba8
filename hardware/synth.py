"""Resource estimate of the RTL with yosys: LUTs, flip-flops, DSPs/multipliers, block RAM.

    python -m edgetune.hardware.synth [--pe ROWSxCOLS] [--json OUT] [--markdown]

Runs `synth_ice40` (iCE40 LUT4, SB_DFF*, SB_MAC16, SB_RAM40_4K) and a generic flow
(`synth -lut 4`, memories and multipliers left as block RAM and DSP cells) for device_link and
pe_core. The link is synthesised with a 1 KiB max payload and 4 KiB staging/result
buffers (a board keeps large blobs in external RAM; docs/HARDWARE.md).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .sim import RTL, LINK_RTL, PE_RTL

LINK_SYNTH = {"CLKS_PER_BIT": 217, "IDLE_CLKS": 12_500_000, "MAX_PAYLOAD": 1024, "BUF_AW": 11,
              "STAGE_AW": 12, "RES_AW": 12}
# The PE core's memories kept small (256 pointer, 1024 list, 256 vector/state and 256 output
# words: 31 iCE40 block RAMs at 2x2) so that the estimate is about the datapath; the
# simulations use larger ones.
PE_SYNTH = {"PAW": 8, "LAW": 10, "VAW": 8, "OAW": 8}


def _yosys(script: str, timeout: float = 900.0) -> str:
    if shutil.which("yosys") is None:
        raise RuntimeError("yosys is not installed: apt-get install yosys")
    with tempfile.NamedTemporaryFile("w", suffix=".ys", delete=False) as f:
        f.write(script)
    try:
        r = subprocess.run(["yosys", "-q", "-s", f.name], capture_output=True, text=True, timeout=timeout)
    finally:
        Path(f.name).unlink()
    if r.returncode != 0:
        raise RuntimeError(f"yosys failed: {(r.stderr or r.stdout)[-2000:]}")
    return r.stdout


def _cells(stat: str) -> dict:
    """Cell counts of the last `stat` in yosys output."""
    block = stat[stat.rfind("Number of cells"):]
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s+(\S+)\s*$", block, re.M)} | \
        {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\S+)\s+(\d+)\s*$", block, re.M)}


def _read(files, top, params) -> str:
    reads = "\n".join(f"read_verilog {RTL / f}" for f in files)
    chp = " ".join(f"-set {k} {v}" for k, v in params.items())
    return f"{reads}\n" + (f"chparam {chp} {top}\n" if chp else "") + f"hierarchy -top {top}\n"


# The generic flow is yosys' `synth -lut 4` for an FPGA with LUT4s, block RAM and multiplier
# blocks: memories stay memory cells (no memory_map: they would become flip-flops) and
# multipliers stay $mul cells (no alumacc, and techmap skips them), so the LUT count is the
# logic around them. Memory bits and the 48-bit significand products are counted on the
# elaborated design.
GENERIC = ("proc\nflatten\nopt_clean\nwreduce\nopt_clean\ntee -o /dev/stdout stat -width\n"
           "synth -flatten -top {top} -lut 4 -noalumacc -run coarse:fine\n"
           "opt -fast -full\ntechmap t:$mul %n\nopt -fast\nabc -fast -lut 4\nopt -fast\n"
           "tee -o /dev/stdout stat\n")


def synth(top: str, files, params) -> dict:
    """{"ice40": {...}, "generic": {...}} for one design."""
    base = _read(files, top, params)
    ice = _cells(_yosys(base + f"synth_ice40 -dsp -top {top}\ntee -o /dev/stdout stat\n"))
    out = _yosys(base + GENERIC.format(top=top))
    elab, gen = out[:out.rfind("Number of wires")], _cells(out)
    ffs = lambda c: sum(v for k, v in c.items() if "DFF" in k.upper())  # noqa: E731
    mem_bits = re.findall(r"Number of memory bits:\s+(\d+)", elab)
    # $mul cells as elaborated, with their widths: the fp32 significand products are 24x24 -> 48
    muls = re.findall(r"^\s+\$mul_(\d+)\s+(\d+)\s*$", elab, re.M)
    return {
        "ice40": {"LUT4": ice.get("SB_LUT4", 0), "flip_flops": ffs(ice), "SB_MAC16": ice.get("SB_MAC16", 0),
                  "SB_RAM40_4K": ice.get("SB_RAM40_4K", 0), "carry": ice.get("SB_CARRY", 0)},
        "generic": {"LUT4": gen.get("$lut", 0), "flip_flops": ffs(gen),
                    "multipliers": gen.get("$mul", 0),
                    "multipliers_48bit": sum(int(n) for w, n in muls if int(w) == 48),
                    "memories": gen.get("$mem_v2", 0), "memory_bits": int(mem_bits[-1]) if mem_bits else 0},
    }


def report(pe_rows: int = 2, pe_cols: int = 2) -> dict:
    """Resources of device_link (LINK_SYNTH) and of pe_core at ROWS x COLS (PE_SYNTH memories)."""
    pe = {"ROWS": pe_rows, "COLS": pe_cols, **PE_SYNTH}
    return {"device_link": {"params": LINK_SYNTH, **synth("device_link", LINK_RTL, LINK_SYNTH)},
            f"pe_core {pe_rows}x{pe_cols}": {"params": pe, **synth("pe_core", PE_RTL, pe)}}


def yosys_version() -> str:
    """"Yosys 0.23" (the numbers depend on it; docs/HARDWARE.md names the version it shows)."""
    out = subprocess.run(["yosys", "-V"], capture_output=True, text=True, timeout=60).stdout
    m = re.match(r"(Yosys \S+)", out.strip())
    return m.group(1) if m else out.strip()


def markdown(rep: dict) -> str:
    """The resource table of docs/HARDWARE.md, exactly (hardware/test_synth.py compares them)."""
    lines = ["| design | target | LUT4 | flip-flops | DSP / multipliers | block RAM / memories |",
             "|---|---|---|---|---|---|"]
    for name, r in rep.items():
        i, g = r["ice40"], r["generic"]
        lines.append(f"| {name} | iCE40 (synth_ice40 -dsp) | {i['LUT4']} | {i['flip_flops']} | "
                     f"{i['SB_MAC16']} SB_MAC16 | {i['SB_RAM40_4K']} SB_RAM40_4K |")
        lines.append(f"| {name} | generic (synth -lut 4) | {g['LUT4']} | {g['flip_flops']} | "
                     f"{g['multipliers']} $mul ({g['multipliers_48bit']} significand products 24x24->48) | "
                     f"{g['memories']} memories, {g['memory_bits']} bits |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgetune.hardware.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--pe", default="2x2", help="PE array ROWSxCOLS to synthesise (default 2x2)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", action="store_true", help="print docs/HARDWARE.md's table")
    a = ap.parse_args(argv)
    rows, cols = (int(v) for v in a.pe.lower().split("x"))
    rep = report(rows, cols)
    if a.markdown:
        print(f"{yosys_version()}\n\n{markdown(rep)}")
    else:
        print(f"{'design':<16} {'target':<8} {'LUT4':>7} {'FF':>6} {'DSP/mul':>8} {'BRAM/mem':>9}")
        for name, r in rep.items():
            i, g = r["ice40"], r["generic"]
            print(f"{name:<16} {'ice40':<8} {i['LUT4']:>7} {i['flip_flops']:>6} {i['SB_MAC16']:>8} "
                  f"{i['SB_RAM40_4K']:>9}")
            print(f"{'':<16} {'generic':<8} {g['LUT4']:>7} {g['flip_flops']:>6} {g['multipliers']:>8} "
                  f"{g['memories']:>9}")
    if a.json:
        Path(a.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
