"""Generated graphs: the native engine (sparse, and with --dense-kernels) against the dense
numpy reference, at 1, 2, 3 and 4 threads.

Hand-picked shapes missed a partition bug that corrupted gradients on two threads; random
graphs with fan-out, odd channel counts, strides, groups, pools and residual blocks, at odd
batch and image sizes and at more threads than cores, are what find that class of bug.
`HYPOTHESIS_PROFILE=long python -m pytest tests/test_native_generated.py` runs a longer search.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings

import edgetune._native as nat
from edgetune.runtime import load_model
from edgetune.runtime.engines.native import NativeEngine
from graph_gen import cases
from oracle import native_trace, reduction_magnitudes, reference_gradients

THREADS = (1, 2, 3, 4)
RTOL = 1e-5  # of each tensor's max |value|: float summation order, nothing more
EXAMPLES = {"long": 1500}.get(os.environ.get("HYPOTHESIS_PROFILE", ""), 60)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = nat.num_threads()
    yield
    nat.set_num_threads(before)


def _check(what, loss, grads, ref_loss, ref, mags, summary):
    """Equal up to float summation order: each element within RTOL of the larger of its tensor's
    max |value| and its own sum of |terms| (which is what rounding scales with where a
    gradient is a small difference of large terms)."""
    assert abs(loss - ref_loss) <= RTOL * max(abs(ref_loss), 1e-6), f"{what}: loss {loss} != {ref_loss}\n{summary}"
    assert set(grads) == set(ref), f"{what}: gradient names differ\n{summary}"
    for k, want in ref.items():
        got = grads[k]
        assert got.shape == want.shape, f"{what}: {k} shape {got.shape} != {want.shape}"
        scale = np.maximum(max(float(np.abs(want).max()), 1e-12), mags[k])
        ratio = np.abs(got.astype(np.float64) - want) / scale
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        assert ratio[i] <= RTOL, (f"{what}: {k}{list(i)} = {got[i]!r}, reference {want[i]!r}: off by {ratio[i]:.2e} "
                                  f"of max(|{k}|max, its sum of |terms|)\n{summary}")


@settings(max_examples=EXAMPLES)
@given(case=cases())
def test_native_equals_dense_reference_on_generated_graphs(case):
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(case.save(os.path.join(tmp, "g.onnx")))
    try:
        _run_all(model, case)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n(case saved to {_keep(case)})") from None


def _keep(case) -> str:
    """Save a failing case for debugging: the ONNX file and its batch."""
    import hashlib

    folder = os.path.join(tempfile.gettempdir(), "edgetune-failing-cases")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, hashlib.sha1(case.onnx_bytes + case.x.tobytes()).hexdigest()[:12])
    case.save(stem + ".onnx")
    np.savez(stem + ".npz", x=case.x, y=case.y)
    return stem + ".onnx"


def _run_all(model, case):
    refs = {}  # decisions digest -> reference: runs that decide alike share one
    mags = None

    for dense in (False, True):
        for threads in THREADS:
            eng = NativeEngine(dense=dense, threads=threads)
            eng.load(model)
            # sparse: the second step runs with the dense planning the first one chose
            for step in (1, 2) if not dense else (1,):
                loss, grads, decisions = native_trace(eng, case.x, case.y)
                key = _digest(decisions)
                if key not in refs:
                    ref_loss, ref, _, values = reference_gradients(model, case.x, case.y, decisions)
                    refs[key] = ref_loss, ref
                    if mags is None:
                        mags = reduction_magnitudes(model, case.x, case.y, values=values)
                what = f"{'dense-kernels' if dense else 'sparse'} threads={threads} step={step}"
                _check(what, loss, grads, *refs[key], mags, case.summary)


def _digest(decisions) -> bytes:
    import hashlib

    h = hashlib.sha1()
    for k in sorted(decisions):
        v = decisions[k]
        h.update(k.encode())
        h.update(np.ascontiguousarray(v[0] if isinstance(v, tuple) else v).tobytes())
    return h.digest()
