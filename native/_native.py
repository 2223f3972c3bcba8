"""edgetune's kernels, as compiled for the best ISA level this CPU runs (private: use
edgetune.runtime).

A portable build (EDGETUNE_NATIVE_ARCH=OFF) holds one extension module per ISA level,
``_native_<level>`` (x86-64: baseline, avx2, avx512; aarch64: neon); the default build holds
one module tuned for the CPU that built it, ``_native_native``. Each is the same C++ source at
the vector width of its level. ``EDGETUNE_ISA=baseline|avx2|avx512|neon`` forces a level.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

from edgetune.runtime.errors import IsaError

# best first; "native" (a host-tuned build) is the only level of its build
_PREFERENCE = ("native", "avx512", "avx2", "neon", "baseline", "generic")


def built_levels() -> list:
    """The kernel levels this build holds, best first."""
    return [lv for lv in _PREFERENCE if importlib.util.find_spec(f"edgetune._native_{lv}") is not None]


def runnable_levels() -> list:
    """The built levels this CPU can execute, best first."""
    levels = built_levels()
    if "baseline" not in levels:  # a single-level build: native, neon or generic
        return levels
    probe = importlib.import_module("edgetune._native_baseline")  # runs on every x86-64 CPU
    return [lv for lv in levels if probe.cpu_supports(lv)]


def _select():
    levels = built_levels()
    if not levels:
        raise ImportError("edgetune: no compiled kernel module found (edgetune._native_*); reinstall edgetune")
    want = os.environ.get("EDGETUNE_ISA", "").strip().lower()
    if not want:
        return importlib.import_module(f"edgetune._native_{runnable_levels()[0]}")
    if want in levels:
        if want not in runnable_levels():
            raise IsaError(f"EDGETUNE_ISA={want}: this CPU cannot run the {want} kernels "
                           f"(it runs: {', '.join(runnable_levels())})")
        return importlib.import_module(f"edgetune._native_{want}")
    if levels == ["native"]:
        mod = importlib.import_module("edgetune._native_native")
        if mod.SIMD_ISA == want:
            return mod
        raise IsaError(f"EDGETUNE_ISA={want}: this build holds only the kernels tuned for the CPU that built it "
                       f"({mod.SIMD_ISA}); build a portable one with "
                       "pip install . -Ccmake.define.EDGETUNE_NATIVE_ARCH=OFF for every level")
    raise IsaError(f"EDGETUNE_ISA={want}: not a kernel level of this build (it has: {', '.join(levels)})")


def _import_passive():
    """Import the kernels with OpenMP told to wait passively. The conv/gemm kernels run on their
    own pool, which waits passively; the few ops that still use OpenMP would otherwise leave its
    threads spinning after each call, on the cores the pool's threads (or another process on
    the device) need. libgomp reads the policy once, when it is loaded with the module; the
    variable is put back at once, so torch or any other library loaded later is unaffected."""
    had = os.environ.get("OMP_WAIT_POLICY")
    if had is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        return _select()
    finally:
        if had is None:
            os.environ.pop("OMP_WAIT_POLICY", None)


_mod = _import_passive()
globals().update({k: getattr(_mod, k) for k in dir(_mod) if not k.startswith("__")})
LEVEL = _mod.LEVEL
del _mod
