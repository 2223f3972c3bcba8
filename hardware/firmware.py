"""Builds the control processor's firmware (hardware/firmware/) into the RAM image device_top.v
loads at power-on ($readmemh), with Debian's RISC-V cross compiler (apt-get install
gcc-riscv64-unknown-elf): RV32IM, no C library (libgcc for the soft double of the descriptor's
numbers). Images are cached by the hash of their sources under the simulation build root.

    python -m edgetune.hardware.firmware [--ram-words N] [--out DIR]   # prints the image's size
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .sim import HW, SimulatorMissing, build_root

FW = HW / "firmware"
SOURCES = ["start.S", "main.c", "util.c", "fpu.c", "json.c", "model.c", "state.c", "train.c"]
HEADERS = ["fw.h", "mmio.h"]
CC, OBJCOPY, NM = "riscv64-unknown-elf-gcc", "riscv64-unknown-elf-objcopy", "riscv64-unknown-elf-nm"
CFLAGS = ["-march=rv32im", "-mabi=ilp32", "-Os", "-ffreestanding", "-fno-builtin", "-nostdlib", "-nostartfiles",
          "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments", "-Wall", "-Wextra", "-Wno-unused-parameter"]
STACK_BYTES = 6144          # kept free above .bss for the stack (deepest path: the JSON parser)
RAM_WORDS = 1 << 14


class FirmwareToolMissing(SimulatorMissing):
    """The RISC-V cross compiler is not installed."""


def check_tools() -> None:
    for tool in (CC, OBJCOPY, NM):
        if shutil.which(tool) is None:
            raise FirmwareToolMissing("the RISC-V cross compiler is not installed: "
                                      "apt-get install gcc-riscv64-unknown-elf")


def _key(ram_words: int) -> str:
    h = hashlib.sha256(json_bytes(CFLAGS + [str(ram_words), str(STACK_BYTES)]))
    for f in SOURCES + HEADERS + ["link.ld"]:
        h.update((FW / f).read_bytes())
    return h.hexdigest()[:16]


def json_bytes(items) -> bytes:
    return "\0".join(items).encode()


def build(ram_words: int = RAM_WORDS) -> Path:
    """The firmware image as $readmemh text (one 32-bit word per line); built once per source hash."""
    check_tools()
    out = build_root() / f"firmware-{_key(ram_words)}"
    hexfile = out / "firmware.hex"
    if hexfile.exists():
        return hexfile
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        t = Path(tmp)
        ld = t / "link.ld"
        ld.write_text((FW / "link.ld").read_text().replace("RAM_BYTES", str(4 * ram_words)))
        elf = t / "fw.elf"
        r = subprocess.run([CC, *CFLAGS, "-T", str(ld), *[str(FW / s) for s in SOURCES], "-lgcc", "-o", str(elf)],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"firmware build failed:\n{r.stderr[-4000:]}")
        syms = subprocess.run([NM, str(elf)], capture_output=True, text=True, timeout=60).stdout
        end = next(int(line.split()[0], 16) for line in syms.splitlines() if line.endswith(" __bss_end"))
        if end + STACK_BYTES > 4 * ram_words:
            raise RuntimeError(f"firmware needs {end} bytes plus {STACK_BYTES} of stack; RAM has {4 * ram_words}")
        binf = t / "fw.bin"
        subprocess.run([OBJCOPY, "-O", "binary", str(elf), str(binf)], check=True, timeout=60)
        data = binf.read_bytes()
        data += b"\0" * (-len(data) % 4)
        words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
        (out / "size.txt").write_text(f"image {len(data)} bytes, data+bss end {end} bytes, RAM {4 * ram_words}\n")
        tmp_hex = out / "firmware.hex.tmp"
        tmp_hex.write_text("".join(f"{w:08x}\n" for w in words))
        tmp_hex.replace(hexfile)
    return hexfile


def bootcfg_hex(caps_fragment: str = "", reset_after: int = 0) -> str:
    """The boot configuration text (line 1: JSON members added to HELLO's capabilities, line 2: the
    step count after which the device resets itself, 0 = never) as $readmemh words."""
    text = f"{caps_fragment}\n{int(reset_after)}\n".encode() + b"\0"
    if len(text) > 1024:
        raise ValueError("boot configuration longer than 1 KiB")
    text += b"\0" * (-len(text) % 4)
    return "".join(f"{int.from_bytes(text[i:i + 4], 'little'):08x}\n" for i in range(0, len(text), 4))


def bootcfg_words(caps_fragment: str = "", reset_after: int = 0):
    return [int(w, 16) for w in bootcfg_hex(caps_fragment, reset_after).split()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgetune.hardware.firmware", description=__doc__.splitlines()[0])
    ap.add_argument("--ram-words", type=int, default=RAM_WORDS)
    ap.add_argument("--out", default=None, help="copy firmware.hex here")
    a = ap.parse_args(argv)
    hexfile = build(a.ram_words)
    print((hexfile.parent / "size.txt").read_text().strip())
    if a.out:
        shutil.copy(hexfile, Path(a.out) / "firmware.hex")
    return 0


if __name__ == "__main__":
    sys.exit(main())
