"""The golden tensors of the C++ kernel driver (tests/golden/*.etg): they must be exactly what
the dense numpy reference writes today (so they cannot rot), and the Python-driven kernels must
match them the way the driver requires (native/kernel_tests/driver.cpp).

Byte equality holds across machines because every sum of the float64 reference is exact (the
inputs are dyadic and small: tests/kernel_goldens.py proves it for each case), so no BLAS or SIMD
summation order can change a bit. A numpy that changed its random stream would show every golden
as stale: rewrite them then (python tests/kernel_goldens.py --write) and rerun the driver on them."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune import _native
import kernel_goldens

TOL = 1e-5  # of each element's sum of |terms|; the driver's kTol, justified there


@pytest.mark.parametrize("fname", sorted(kernel_goldens.golden_bytes()))
def test_committed_goldens_equal_the_reference(fname):
    path = kernel_goldens.GOLDEN_DIR / fname
    assert path.is_file(), f"{path} missing: python tests/kernel_goldens.py --write"
    want = kernel_goldens.golden_bytes()[fname]
    assert path.read_bytes() == want, f"{fname} differs from the reference: python tests/kernel_goldens.py --write"


# BLAS kernels and numpy SIMD levels this x86-64 machine can be made to use: each sums in its own
# order, with or without FMA (SSE3 Prescott, AVX2 Haswell, AVX-512 SkylakeX; numpy without AVX*)
_NUMERIC_BUILDS = {
    "openblas-prescott-numpy-sse": {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES":
                                    "AVX512F,AVX512_SKX,AVX512CD,AVX512_CLX,AVX512_CNL,AVX512_ICL,AVX512_SPR,AVX2,FMA3,F16C,AVX"},
    "openblas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "openblas-skylakex": {"OPENBLAS_CORETYPE": "SkylakeX"},
}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="OpenBLAS core types named for x86-64")
@pytest.mark.parametrize("build", sorted(_NUMERIC_BUILDS))
def test_goldens_do_not_depend_on_blas_or_simd(build):
    """The generator run under another BLAS kernel and numpy SIMD level writes the same bytes (an
    unknown core type or feature is ignored with a warning, so the check never fails for that)."""
    env = {**os.environ, **_NUMERIC_BUILDS[build], "NPY_DISABLE_CPU_FEATURES": _NUMERIC_BUILDS[build].get(
        "NPY_DISABLE_CPU_FEATURES", "")}
    r = subprocess.run([sys.executable, str(Path(kernel_goldens.__file__))], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "goldens up to date" in r.stdout, r.stdout + r.stderr


def test_no_stray_goldens():
    on_disk = {p.name for p in kernel_goldens.GOLDEN_DIR.glob("*.etg")}
    assert on_disk == set(kernel_goldens.golden_bytes())


def run_case(name: str, dense: bool) -> dict:
    """FP, BP and WG of one golden case through edgetune._native, as the driver runs it."""
    case = kernel_goldens.compute(name)
    kind, C, K, R, S, sh, sw, pt, pl, pb, pr, dh, dw, groups, act, in_act = case["meta"]
    t = case["tensors"]
    z_in = t["z_in"].reshape(t["z_in"].shape[0], C) if kind == "gemm" else t["z_in"]
    if kind == "gemm":
        layer = _native.GemmLayer(C, K, act=act)
        layer.set_weights(t["w"].reshape(K, C), t["b"])
    else:
        layer = _native.ConvLayer(C, K, [R, S], [sh, sw], [pt, pl, pb, pr], [dh, dw], groups, act=act)
        layer.set_weights(t["w"], t["b"])
    _, x = _native.activate(z_in, in_act, dense=dense)
    a, _ = layer.forward(x, dense=dense)
    g_in, dw_, db = layer.backward(t["grad_a"].reshape(a.shape))
    return {"a": a, "g_in": g_in, "dw": dw_, "db": db}


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@pytest.mark.parametrize("name", kernel_goldens.case_names())
def test_python_kernels_match_goldens(name, dense):
    t = kernel_goldens.compute(name)["tensors"]
    got = run_case(name, dense)
    for k, v in got.items():
        ref, scale = t[k].astype(np.float64), t[k + "_scale"].astype(np.float64)
        err = np.abs(np.asarray(v, np.float64).reshape(ref.shape) - ref)
        bad = ~(err <= TOL * scale)
        assert not bad.any(), f"{name} {k}: {bad.sum()} elements off, worst |diff| {err.max():.3g}"
