"""Golden tensors for the C++ kernel test driver (native/kernel_tests/driver.cpp).

Each case is one conv or gemm layer with a fused activation, fed by the activation of a
previous layer (so that its input has structural zeros and its input gradient is masked by
that activation's G). The expected tensors come from the dense numpy reference engine
(runtime/engines/dense_ops.py) computed in float64; the driver runs FP, BP and WG of the real
kernels on the same inputs and compares.

Every golden is byte-identical whatever the CPU, the numpy build and its BLAS (which sum in
different orders and with or without FMA), because every sum the reference computes is exact
in float64, so its order cannot change it; each tensor is then rounded to float32 once. By
construction (bounds checked by `_check_exact` on every case):

* z_in = n/8 with integer n; for a hard-swish input n is a multiple of 3, so that
  x = z(z+3)/6 = n(n+24)/384 = (n/3)(n+24)/128 is dyadic too (ReLU and ReLU6 inputs are
  n/8, 6 or 0). Every x is a multiple of 1/128 with |x| <= 7.
* w = j/64 (|j| <= 40), b = i/16: every product x*w is a multiple of 2^-13, and so is
  every partial sum of the pre-activation z; their magnitudes are bounded by z's sum of
  |terms| (z_scale), below 2^9, so z is exact even in float32 (22 bits) and every kink
  (0, 6, -3, 3) is decided alike by the reference and every kernel: no draw is rejected for
  lying near a kink, each case has one fixed seed.
* grad_a = g/16, and for a hard-swish output g is a multiple of 3, so that
  d = grad_a * f'(z) = (grad_a/3) * (z + 3/2) on the curved part is a multiple of 2^-17
  (computed in that exact form; dense_ops' rounded z/3 + 1/2 is checked to agree with it).
* the backward sums (dx = d*w, dW = d*x, db = d) then have terms that are multiples of
  2^-24 whose sums of |terms| (the _scale tensors) stay below 2^29: every partial sum, in
  any order, is a multiple of 2^-24 below 2^29, i.e. representable in float64's 53 bits,
  so no addition rounds.

Only elementwise results that are not sums (a = f(z) of a hard-swish output) are rounded,
and each IEEE operation rounds the same way everywhere.

File format (.etg, little-endian, read by the driver with no dependencies)::

    ETGOLDEN 1
    case <name>
    layer <conv|gemm> C K R S sh sw pt pl pb pr dh dw groups <act> <in_act>
    tensor <name> <ndim> <d0> ... <dn-1>      (one line per tensor)
    data
    <float32 values of every tensor, in the order listed>

Tensors: z_in (NHWC pre-activation of the input), w (OIHW), b, grad_a (NHWC), and the
expected a, g_in, dw, db, each followed by <name>_scale: the same reference run on absolute
values (sum of |terms| of every output element), which the driver's tolerance is relative to.

    python tests/kernel_goldens.py --write     # rewrite tests/golden/*.etg
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from edgetune.runtime.engines import dense_ops

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
ACTS = ("relu", "relu6", "hardswish")
# the dense_ops name and attributes of each activation
_OPS = {"relu": ("relu", {}), "relu6": ("clip", {"min": 0.0, "max": 6.0}), "hardswish": ("hardswish", {})}

# name: (kind, N, H, W, C, K, R, S, stride, pad, groups, weight step count m: w in [-m, m] / 64)
GEOMETRIES = {
    "conv3x3": ("conv", 2, 6, 6, 8, 16, 3, 3, 1, 1, 1, 12),
    "conv3x3s2": ("conv", 2, 7, 7, 12, 8, 3, 3, 2, 1, 1, 10),
    "depthwise3x3": ("conv", 2, 6, 6, 16, 16, 3, 3, 1, 1, 16, 40),
    "pointwise1x1": ("conv", 2, 5, 5, 16, 24, 1, 1, 1, 0, 1, 20),
    "gemm": ("gemm", 6, 1, 1, 40, 12, 1, 1, 1, 0, 1, 14),
}


def case_names() -> list:
    """Every golden case, as <geometry>_<activation>."""
    return [f"{g}_{a}" for g in GEOMETRIES for a in ACTS]


def _act(name, z):
    op, attrs = _OPS[name]
    return dense_ops.act_forward(op, z, attrs)


def _dact(name, z):
    op, attrs = _OPS[name]
    return dense_ops.act_derivative(op, z, _act(name, z), attrs)


def _in_g(name, z):
    """The set G of an activation as the kernels keep it (native/info.hpp): where f' is not
    zero on an interval. Hard-swish's f' = z/3 + 1/2 is zero at z = -1.5 alone; that point stays
    in G (the consumer's product with f' zeroes it there)."""
    if name == "hardswish":
        return z > -3
    return _dact(name, z) != 0


# The dyadic grid (power-of-two denominator) of every input and the one every partial sum of
# each output lies on; _check_exact proves each case exact with them (module docstring).
_GRID = {"z_in": 3, "x": 7, "w": 6, "b": 4, "grad_a": 4, "d": 17, "z": 13, "dx": 24, "dw": 24, "db": 17}
_F64_BITS = 53


def _on_grid(t, bits: int) -> bool:
    scaled = np.asarray(t, np.float64) * 2.0 ** bits
    return bool(np.all(scaled == np.round(scaled)))


def _check_exact(name: str, parts: dict) -> None:
    """Every input lies on its dyadic grid, and every sum's |terms| total (its scale) is small
    enough that each partial sum on the output's grid is a float64: then no addition rounds,
    whatever the order or FMA use of the BLAS and numpy build that computes it."""
    for key in ("z_in", "x", "w", "b", "grad_a", "d"):
        assert _on_grid(parts[key], _GRID[key]), f"{name}: {key} is not a multiple of 2^-{_GRID[key]}"
    for key in ("z", "dx", "dw", "db"):
        limit = 2.0 ** (_F64_BITS - _GRID[key])
        assert float(np.abs(parts[key + "_scale"]).max()) < limit, f"{name}: {key}'s sums may round"
        assert _on_grid(parts[key], _GRID[key]), f"{name}: {key} is not a multiple of 2^-{_GRID[key]}"
    assert float(np.abs(parts["z_scale"]).max()) < 2.0 ** (24 - _GRID["z"]), f"{name}: z is not exact in float32"


def _times3_if(cond: bool, n: np.ndarray) -> np.ndarray:
    """n, or the multiple of 3 at or below it (a hard-swish operand, see the module docstring)."""
    return 3 * (n // 3) if cond else n


def _d_exact(act: str, z: np.ndarray, grad_a: np.ndarray) -> np.ndarray:
    """grad_a * f'(z) without rounding: hard-swish's curved part as (grad_a/3) * (z + 3/2),
    exact when grad_a is a multiple of 3/16; the other activations' f' is 0 or 1."""
    if act != "hardswish":
        return grad_a * _dact(act, z)
    return np.where(z <= -3, 0.0, np.where(z < 3, (grad_a / 3) * (z + 1.5), grad_a))


@functools.lru_cache(maxsize=None)
def compute(name: str) -> dict:
    """The inputs and reference outputs of one case, as float32 arrays (NHWC / OIHW); cached,
    do not modify."""
    return _draw(name, np.random.default_rng(10 + 1000 * case_names().index(name)))


def _draw(name: str, rng) -> dict:
    geo, act = name.rsplit("_", 1)
    kind, N, H, W, C, K, R, S, st, pad, groups, m = GEOMETRIES[geo]
    in_act = act  # the previous layer has the same activation: relu/relu6/hard-swish inputs
    z_in = _times3_if(in_act == "hardswish", rng.integers(-40, 57, (N, C, H, W))) / 8.0
    w = rng.integers(-m, m + 1, (K, C // groups, R, S)) / 64.0
    b = rng.integers(-48, 49, K) / 16.0  # up to +-3: some channels saturate ReLU6
    x = _act(in_act, z_in)
    attrs = {"stride": (st, st), "pads": (pad, pad, pad, pad), "dilation": (1, 1), "group": groups}
    if kind == "gemm":
        gattrs = {"transB": 1, "alpha": 1.0, "beta": 1.0}
        x2, w2 = x.reshape(N, C), w.reshape(K, C)
        z = dense_ops.gemm_forward(x2, w2, b, gattrs)[:, :, None, None]
        zs = dense_ops.gemm_forward(np.abs(x2), np.abs(w2), np.abs(b), gattrs)[:, :, None, None]
    else:
        z, xp = dense_ops.conv_forward(x, w, b, attrs)
        zs, xps = dense_ops.conv_forward(np.abs(x), np.abs(w), np.abs(b), attrs)
    grad_a = _times3_if(act == "hardswish", rng.integers(-16, 17, z.shape)) / 16.0
    d = _d_exact(act, z, grad_a)
    # dense_ops rounds z/3 + 1/2 (a few float64 ulps of |grad_a| <= 18/16)
    assert np.abs(d - grad_a * _dact(act, z)).max() <= 1e-14, f"{name}: d differs from dense_ops'"
    if kind == "gemm":
        d2 = d.reshape(N, K)
        dx, dw, db = dense_ops.gemm_backward(d2, x2, w2, gattrs, True)
        dxs, dws, dbs = dense_ops.gemm_backward(np.abs(d2), np.abs(x2), np.abs(w2), gattrs, True)
        dx, dxs = dx.reshape(x.shape), dxs.reshape(x.shape)
    else:
        dx, dw, db = dense_ops.conv_backward(d, xp, x.shape, w, attrs, True)
        dxs, dws, dbs = dense_ops.conv_backward(np.abs(d), xps, x.shape, np.abs(w), attrs, True)
    _check_exact(name, {"z_in": z_in, "x": x, "w": w, "b": b, "grad_a": grad_a, "d": d, "z": z, "z_scale": zs,
                        "dx": dx, "dx_scale": dxs, "dw": dw, "dw_scale": dws, "db": db, "db_scale": dbs})
    g_mask = _in_g(in_act, z_in)  # the kernels zero g_in outside the input's G
    a = _act(act, z)
    # f' of hard-swish is up to 1.5: a's rounding scale is 1.5x z's
    a_scale = zs * (1.5 if act == "hardswish" else 1.0)
    nhwc = lambda t: np.transpose(t, (0, 2, 3, 1))  # noqa: E731
    out = {"z_in": nhwc(z_in), "w": w, "b": b, "grad_a": nhwc(grad_a),
           "a": nhwc(a), "a_scale": nhwc(a_scale), "g_in": nhwc(dx * g_mask), "g_in_scale": nhwc(dxs),
           "dw": dw, "dw_scale": dws, "db": db, "db_scale": dbs}
    meta = (kind, C, K, R, S, st, st, pad, pad, pad, pad, 1, 1, groups, act, in_act)
    return {"meta": meta, "tensors": {k: np.ascontiguousarray(v, dtype="<f4") for k, v in out.items()}}


def encode(name: str, case: dict) -> bytes:
    """The .etg bytes of a case (format in the module docstring)."""
    head = ["ETGOLDEN 1", f"case {name}", "layer " + " ".join(str(v) for v in case["meta"])]
    for k, t in case["tensors"].items():
        head.append(f"tensor {k} {t.ndim} " + " ".join(str(s) for s in t.shape))
    head.append("data")
    body = b"".join(t.tobytes() for t in case["tensors"].values())
    return ("\n".join(head) + "\n").encode() + body


@functools.lru_cache(maxsize=None)
def golden_bytes() -> dict:
    """{file name: bytes} of every golden, regenerated from the reference."""
    return {f"{n}.etg": encode(n, compute(n)) for n in case_names()}


def main(argv=None) -> int:
    """Check (default) or rewrite (--write) tests/golden/*.etg."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the golden files")
    args = ap.parse_args(argv)
    want = golden_bytes()
    if args.write:
        GOLDEN_DIR.mkdir(exist_ok=True)
        for old in GOLDEN_DIR.glob("*.etg"):
            if old.name not in want:
                old.unlink()
        for fname, data in want.items():
            (GOLDEN_DIR / fname).write_bytes(data)
        print(f"wrote {len(want)} goldens to {GOLDEN_DIR}")
        return 0
    stale = [f for f, d in want.items() if not (GOLDEN_DIR / f).is_file() or (GOLDEN_DIR / f).read_bytes() != d]
    print("stale: " + ", ".join(stale) if stale else "goldens up to date")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
