"""ISA levels of a portable build (EDGETUNE_NATIVE_ARCH=OFF) against each other, and the
errors of EDGETUNE_ISA.

Each runnable level runs the same layers (tests/isa_probe.py: conv 3x3, strided, depthwise,
1x1, gemm and a wide conv; every activation; sparse and dense mode; FP, BP and WG) in its own
process. The levels compile one source at another vector width and, from AVX2 on, with FMA
contraction, so:

  * the activation and its gradient alone (no sums) must be equal bit for bit;
  * db sums d in pixel order in double at every level (native/conv.cpp grad_prologue), so it is
    bit-equal wherever d is, i.e. for activations whose f' is piecewise constant when no
    element of z crossed a kink between the levels;
  * every other sum (FP, BP, WG dW) changes order or rounding with the level: equal within
    1e-6 of the tensor's largest magnitude (observed: under 7e-7).

A build with one level (the default -march=native build) skips the comparison.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune import _native

HERE = Path(__file__).resolve().parent
LEVELS = _native.runnable_levels()
REL = 1e-6
ELEMENTWISE = ("act_a", "act_grad_z")
# activation -> the region of z where f' takes its non-zero constant (read off a = f(z))
REGION = {"none": lambda a: np.ones(a.shape, bool), "relu": lambda a: a > 0,
          "relu6": lambda a: (a > 0) & (a < 6), "leaky_relu": lambda a: a > 0}


def _env(level: str) -> dict:
    env = dict(os.environ, EDGETUNE_ISA=level)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{level: {key: array}} of tests/isa_probe.py run under each runnable level."""
    if len(LEVELS) < 2:
        pytest.skip(f"this build runs one kernel level ({', '.join(LEVELS)}); "
                    "a portable build (EDGETUNE_NATIVE_ARCH=OFF) has several")
    out = {}
    for level in LEVELS:
        path = tmp_path_factory.mktemp("isa") / f"{level}.npz"
        subprocess.run([sys.executable, str(HERE / "isa_probe.py"), str(path)], env=_env(level), check=True,
                       timeout=600)
        with np.load(path) as f:
            out[level] = {k: f[k] for k in f.files}
        assert str(out[level].pop("_level")) == level
    return out


def _pairs():
    pairs = [(a, b) for i, a in enumerate(LEVELS) for b in LEVELS[i + 1:]]
    return pairs or [pytest.param(None, marks=pytest.mark.skip(reason=f"one runnable kernel level ({LEVELS[0]})"))]


@pytest.mark.parametrize("pair", _pairs(), ids=lambda p: f"{p[0]}-{p[1]}" if p else "none")
def test_levels_agree(results, pair):
    hi, lo = (results[lv] for lv in pair)
    assert hi.keys() == lo.keys()
    bitwise_db = 0
    for key in sorted(lo):
        geo, act, mode, what = key.split("/")
        x, y = hi[key], lo[key]
        assert x.shape == y.shape, key
        exact = what in ELEMENTWISE
        if what == "wg_db" and act in REGION:  # d equal when every z stayed on its side of the kinks
            a_key = f"{geo}/{act}/{mode}/fp_a"
            exact = np.array_equal(REGION[act](hi[a_key]), REGION[act](lo[a_key]))
            bitwise_db += exact
        if exact:
            assert np.array_equal(x, y), f"{key}: {pair} differ, expected bit-equal"
        else:
            scale = float(np.abs(y).max(initial=0.0))
            err = float(np.abs(x.astype(np.float64) - y).max(initial=0.0))
            assert err <= REL * scale, f"{key}: {pair} differ by {err:.3g} > {REL} x {scale:.3g}"
    assert bitwise_db > 0, "no db was compared bit for bit"


def _import_with(isa: str, cpu_runs=None) -> subprocess.CompletedProcess:
    """Import edgetune._native under EDGETUNE_ISA=isa in a new process; cpu_runs (a list of
    levels) stands in for the CPU's answer to cpu_supports, to play a CPU that lacks a level."""
    code = "import edgetune._native as n; print(n.LEVEL)"
    if cpu_runs is not None:
        code = (f"import edgetune._native_baseline as b; b.cpu_supports = lambda lv: lv in {list(cpu_runs)!r}; "
                + code)
    return subprocess.run([sys.executable, "-c", code], env=_env(isa), capture_output=True, text=True, timeout=120)


def test_unknown_level_is_a_clear_isa_error():
    r = _import_with("sse9")
    assert r.returncode != 0
    # a portable build names its levels, a host-tuned one says how to build a portable one
    assert "IsaError: EDGETUNE_ISA=sse9: " in r.stderr, r.stderr


@pytest.mark.skipif("baseline" not in _native.built_levels(), reason="a single-level build")
def test_unrunnable_level_is_a_clear_isa_error():
    # a CPU with baseline x86-64 alone, asked for the best level of the build
    r = _import_with(_native.built_levels()[0], cpu_runs=["baseline"])
    assert r.returncode != 0
    assert f"IsaError: EDGETUNE_ISA={_native.built_levels()[0]}: this CPU cannot run" in r.stderr, r.stderr
    assert _import_with("", cpu_runs=["baseline"]).stdout.strip() == "baseline"  # unforced: the best it runs


@pytest.mark.parametrize("level", LEVELS)
def test_each_runnable_level_imports_as_asked(level):
    r = _import_with(level)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == level


def test_cli_reports_isa_error_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgetune.runtime.cli", "finetune", "--epochs", "1"], env=_env("sse9"),
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode != 0
    assert "EDGETUNE_ISA=sse9" in r.stderr and "Traceback" not in r.stderr, r.stderr
