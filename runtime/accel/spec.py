"""The accelerator's specification (spec.json): loading, checking, and the derived figures.

Every entry of spec.json is ``{value, unit, source}``. `load_spec()` returns plain values;
callers may override any of them (edgetune simulate's --config does).
"""
from __future__ import annotations

import copy
import json
import math
import os
from typing import Optional

import numpy as np

SPEC_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spec.json")
_WHOLE = ("pe_rows", "pe_cols", "estimator_lanes")
_POSITIVE = ("clock_mhz", "dram_bytes_per_cycle", "dram_energy_pj_per_64b", "compare_energy_pj", "staging_kb")


def read_entries(path: str) -> dict:
    """{key: value} of a file of {value, unit, source} entries (keys starting with _ are notes)."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return {k: copy.deepcopy(v["value"]) for k, v in raw.items() if not k.startswith("_")}


def load_spec(overrides: Optional[dict] = None) -> dict:
    """The accelerator's parameters, with `overrides` (already checked by the caller) applied."""
    spec = read_entries(SPEC_FILE)
    spec.update(overrides or {})
    return spec


def check_spec(spec: dict, bad) -> None:
    """Call `bad(message)` on the first value that cannot describe an accelerator."""
    for k in _WHOLE:
        if not isinstance(spec[k], int) or isinstance(spec[k], bool) or spec[k] < 1:
            bad(f"{k} must be a whole number >= 1, got {spec[k]!r}")
    for k in _POSITIVE:
        if not isinstance(spec[k], (int, float)) or spec[k] <= 0:
            bad(f"{k} must be a positive number, got {spec[k]!r}")
    if not isinstance(spec["static_power_w"], (int, float)) or spec["static_power_w"] < 0:
        bad("static_power_w must be >= 0")
    if spec["precision"] not in spec["mac_energy_pj"]:
        bad(f"precision {spec['precision']!r} has no entry in mac_energy_pj")
    for k, v in spec["buffer_kb"].items():
        if not isinstance(v, (int, float)) or v <= 0:
            bad(f"buffer_kb.{k} must be a positive number")
    sram = spec["sram_energy_pj_per_64b"]
    if len(sram.get("size_kb", [])) < 2 or len(sram["size_kb"]) != len(sram.get("pj", [])):
        bad("sram_energy_pj_per_64b needs matching size_kb and pj lists of at least 2 points")


def elem_bytes(spec: dict) -> int:
    """Bytes per stored element at the spec's precision."""
    return 2 if spec["precision"] == "fp16" else 4


def sram_pj_per_64b(size_kb: float, spec: dict) -> float:
    """Energy of one 64-bit access to an SRAM of `size_kb`: log-log interpolation of the table."""
    xs = np.log(np.asarray(spec["sram_energy_pj_per_64b"]["size_kb"], float))
    ys = np.log(np.asarray(spec["sram_energy_pj_per_64b"]["pj"], float))
    x = math.log(size_kb)
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return float(math.exp(ys[i] + slope * (x - xs[i])))


def capabilities(spec: Optional[dict] = None) -> dict:
    """The spec as a device states it in HELLO (PROTOCOL.md section 5)."""
    spec = spec or load_spec()
    kb = spec["buffer_kb"]
    return {"pe_array": [spec["pe_rows"], spec["pe_cols"]], "clock_mhz": spec["clock_mhz"],
            "estimator_lanes": spec["estimator_lanes"],
            "buffers": {"weight_bytes": int(kb["weight"] * 1024), "activation_bytes": int(kb["activation"] * 1024),
                        "error_bytes": int(kb["error"] * 1024), "staging_bytes": int(spec["staging_kb"] * 1024)}}
