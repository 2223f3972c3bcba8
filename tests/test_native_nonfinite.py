"""NaN and Inf in the native kernels (issue 22: `edgetune info` segfaulted on a ReLU6 model with a
NaN bias), and the sizes every C++ entry point refuses on its own.

A NaN pre-activation lies where values and errors pass (native/act.hpp, kNaNRule): a = NaN, in
A and in G. The state bits, from which ReLU and ReLU6 lists are decoded, and the counts of
non-zero a, which place the packed values, must agree on every element; when they did not, a
kernel read past a row."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgetune import _native as nat

ACTS = {"relu": {}, "relu6": {"lo": 0.0, "hi": 6.0}, "hardswish": {}}


def _z(channels: int) -> np.ndarray:
    z = np.random.default_rng(channels).standard_normal((2, 3, 3, channels)).astype(np.float32) * 4
    z[0, 0, 0, 1] = z[1, 2, 2, channels - 1] = np.nan
    z[0, 1, 1, 0], z[1, 0, 2, 2] = np.inf, -np.inf
    return z


@pytest.mark.parametrize("channels", [16, 13], ids=["vector_rows", "scalar_rows"])
@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_nan_passes_and_the_lists_agree_with_the_values(act, channels, dense):
    z = _z(channels)
    a, info = nat.activate(z, act, dense=dense, **ACTS[act])
    assert np.isnan(a[np.isnan(z)]).all(), "a NaN pre-activation must reach a (as in the dense engine)"
    flat = a.reshape(-1, channels)
    ptr, idx = info.pixel_lists()
    counts, _ = info.pixel_counts()
    for p in range(flat.shape[0]):
        listed = idx[ptr[p]:ptr[p + 1]].tolist()
        want = list(range(channels)) if dense else np.flatnonzero(flat[p] != 0).tolist()
        assert listed == want, f"pixel {p}: listed {listed}, non-zero a at {want}"
        assert counts[p] == (flat[p] != 0).sum() or dense
    assert info.mask_g()[np.isnan(z)].all(), "a NaN pre-activation must pass its error back"
    np.testing.assert_array_equal(info.decompress(), a)


_LAYER = """
import numpy as np
from edgetune import _native as nat
rng = np.random.default_rng(0)
layer = nat.ConvLayer(8, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, act="relu6", lo=0.0, hi=6.0)
w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
b = np.zeros(16, np.float32)
b[3] = np.nan
layer.set_weights(w, b)
nxt = nat.ConvLayer(16, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, act="relu6", lo=0.0, hi=6.0)
nxt.set_weights(w.repeat(2, axis=1), np.zeros(16, np.float32))
x = np.maximum(rng.standard_normal((4, 6, 6, 8)), 0).astype(np.float32)
for _ in range(3):
    a, info = layer.forward(x)
    a2, _ = nxt.forward(info)
    g, dw, db = nxt.backward(np.ones_like(a2))
    layer.backward(g, need_input_grad=False)
print(bool(np.isnan(a[..., 3]).all()), bool(np.isnan(a2).any()))
"""


def test_a_nan_bias_through_relu6_layers_runs_and_propagates():
    """The segfault's path (a NaN bias, ReLU6, the next layer reading the derived lists, BP and
    WG), in a child process so that a regression fails this test instead of killing the run."""
    r = subprocess.run([sys.executable, "-c", _LAYER], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.split() == ["True", "True"], r.stdout


@pytest.mark.parametrize("make", [
    lambda: nat.ConvLayer(8, 8, [3, 3], [1, 1], [1 << 20, 0, 0, 0], [1, 1], 1),
    lambda: nat.ConvLayer(8, 8, [1 << 16, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1),
    lambda: nat.ConvLayer(1 << 25, 8, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),
    lambda: nat.ConvLayer(1 << 14, 1 << 14, [11, 11], [1, 1], [0, 0, 0, 0], [1, 1], 1),
    lambda: nat.ConvLayer(8, 8, [3, 3], [0, 1], [0, 0, 0, 0], [1, 1], 1),
    lambda: nat.maxpool_forward(np.zeros((1, 4, 4, 8), np.float32), [2, 2], [1, 1], [1 << 20, 0, 0, 0]),
    lambda: nat.activate(np.zeros((2, 0), np.float32), "relu"),
    lambda: nat.analyze_input(np.zeros((1, 2, 2, 0), np.float32)),
    lambda: nat.ConvLayer(8, 8, [3, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1).out_shape(2, 2),
], ids=["pad", "kernel", "channels", "weights", "stride", "pool_pad", "activate_zero_c", "analyze_zero_c",
        "input_smaller_than_kernel"])
def test_entry_points_refuse_bad_sizes_themselves(make):
    """Not only Python's model checks: the bindings refuse such sizes before allocating or indexing."""
    with pytest.raises(ValueError):
        make()
