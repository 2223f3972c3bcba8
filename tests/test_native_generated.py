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

from edgetune.runtime import load_model
from edgetune.runtime.engines.native import NativeEngine
from graph_gen import cases
from oracle import assert_equal_up_to_rounding, native_trace, reduction_magnitudes, reference_gradients

THREADS = (1, 2, 3, 4)
EXAMPLES = {"long": 1500}.get(os.environ.get("HYPOTHESIS_PROFILE", ""), 60)


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
                    ref_loss, ref, _ = reference_gradients(model, case.x, case.y, decisions)
                    refs[key] = ref_loss, ref
                    if mags is None:
                        mags = reduction_magnitudes(model, case.x, case.y)
                what = f"{'dense-kernels' if dense else 'sparse'} threads={threads} step={step}"
                assert_equal_up_to_rounding(what, loss, grads, *refs[key], mags, case.summary)


def _digest(decisions) -> bytes:
    import hashlib

    h = hashlib.sha1()
    for k in sorted(decisions):
        v = decisions[k]
        h.update(k.encode())
        h.update(np.ascontiguousarray(v[0] if isinstance(v, tuple) else v).tobytes())
    return h.digest()
