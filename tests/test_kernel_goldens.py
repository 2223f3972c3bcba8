"""The golden tensors of the C++ kernel driver (tests/golden/*.etg): they must be exactly what
the dense numpy reference writes today (so they cannot rot), and the Python-driven kernels must
match them the way the driver requires (native/kernel_tests/driver.cpp).

Byte equality holds across machines where the inputs keep every sum exact (the dyadic cases):
the float64 reference then rounds to the same float32 values whatever order it sums in. In the
cases fed by hard-swish it does not: numpy sums in float64 in another order on aarch64 than on
x86-64 (its BLAS for gemm, its einsum vector loops for conv), and a result lying near a float32
rounding boundary then rounds to the neighbouring float32 (1 of 144 dw elements of depthwise3x3_hardswish, 2 of 480 of gemm_hardswish). Those
cases must equal the reference within one float32 ulp per element. A numpy that changed its
random stream would show every golden as stale: rewrite them then (python
tests/kernel_goldens.py --write) and rerun the driver on them."""
from __future__ import annotations

import numpy as np
import pytest

from edgetune import _native
import kernel_goldens

TOL = 1e-5  # of each element's sum of |terms|; the driver's kTol, justified there


@pytest.mark.parametrize("fname", sorted(kernel_goldens.golden_bytes()))
def test_committed_goldens_equal_the_reference(fname):
    path = kernel_goldens.GOLDEN_DIR / fname
    assert path.is_file(), f"{path} missing: python tests/kernel_goldens.py --write"
    want, have = kernel_goldens.golden_bytes()[fname], path.read_bytes()
    if have == want:
        return
    exact = kernel_goldens.compute(fname.removesuffix(".etg"))["meta"][-1] != "hardswish"
    assert not exact and _within_one_ulp(have, want), \
        f"{fname} differs from the reference: python tests/kernel_goldens.py --write"


def _within_one_ulp(have: bytes, want: bytes) -> bool:
    """The same header, and every float32 of the data equal or a neighbour (one ulp away)."""
    sep = b"\ndata\n"
    (h1, _, d1), (h2, _, d2) = have.partition(sep), want.partition(sep)
    if h1 != h2 or len(d1) != len(d2):
        return False
    a, b = np.frombuffer(d1, "<f4"), np.frombuffer(d2, "<f4")
    return bool(np.all((a == b) | (np.nextafter(a, np.float32(np.inf)) == b) | (np.nextafter(a, np.float32(-np.inf)) == b)))


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
