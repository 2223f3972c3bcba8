"""Generated graphs: the native engine (sparse, and with --dense-kernels) against the dense
numpy reference, at 1, 2, 3 and 4 threads, with the kernels chosen per layer (auto) and with
each kernel family forced; and every thread count bit for bit equal to the first.

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


# kernel policies: auto chooses per layer and phase; walk and tiled force one family wherever it
# applies, so both are checked on every graph whatever its sparsity
POLICIES = {"auto": THREADS, "walk": (1, 3), "tiled": (1, 3)}


def _run_all(model, case):
    import edgetune._native as nat

    refs = {}  # decisions digest -> reference: runs that decide alike share one
    mags = None
    try:
        for policy, thread_counts in POLICIES.items():
            nat.set_kernel_policy(policy)
            for dense in (False, True):
                first = {}  # step -> (loss, grads) at the first thread count: every other must equal it bit for bit
                for threads in thread_counts:
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
                        what = f"{'dense-kernels' if dense else 'sparse'} kernels={policy} threads={threads} step={step}"
                        assert_equal_up_to_rounding(what, loss, grads, *refs[key], mags, case.summary)
                        if step not in first:
                            first[step] = (threads, loss, grads)
                        else:
                            _assert_same_bits(what, first[step], loss, grads)
    finally:
        nat.set_kernel_policy("auto")


def _assert_same_bits(what, first, loss, grads):
    """Results must not depend on the thread count: chunks are summed in a fixed order."""
    threads0, loss0, grads0 = first
    assert loss == loss0, f"{what}: loss {loss!r} differs from {loss0!r} at threads={threads0}"
    for name, g in grads.items():
        assert np.array_equal(g, grads0[name]), (
            f"{what}: {name} differs from threads={threads0} by up to {np.abs(g - grads0[name]).max():.3g}")


def _digest(decisions) -> bytes:
    import hashlib

    h = hashlib.sha1()
    for k in sorted(decisions):
        v = decisions[k]
        h.update(k.encode())
        h.update(np.ascontiguousarray(v[0] if isinstance(v, tuple) else v).tobytes())
    return h.digest()
