"""A tie-aware dense reference for differential tests of the native engine.

Two engines that sum in different orders may take different sides of a decision whose
inputs are within rounding of each other: a pre-activation z that is within an ulp or
so of a ReLU/ReLU6/hard-swish threshold, or a max-pool window whose two largest values
are that close. Either side is a correct result, but the gradients then differ by far
more than rounding. Rather than choosing batches without such near-ties, the reference
takes the native engine's side at exactly those places - and only where the reference's
own margin is within `tau` of the threshold (relative to the tensor's largest value).
A decision that differs anywhere else is a bug and is reported as one.
"""
from __future__ import annotations

import copy
from typing import Dict, Tuple

import numpy as np

from edgetune.runtime.engines import dense_ops as ops
from edgetune.runtime.engines.dense import DenseEngine
from edgetune.runtime.ir import ACTIVATION_OPS

F32 = np.float32
TAU = 1e-5  # a near-tie: within this of a threshold, relative to the tensor's max |value|


def _thresholds(node) -> Tuple[float, ...]:
    """The values of z where the state code (see native/info.hpp) changes."""
    if node.op in ("relu", "leakyrelu"):
        return (0.0,)
    if node.op == "clip":
        return (float(node.attrs["min"]), float(node.attrs["max"]))
    if node.op == "hardswish":
        return (-3.0, 3.0)
    return ()


def state_codes(node, z: np.ndarray) -> np.ndarray:
    """The native kernels' state code of each element: 0/1 for ReLU and LeakyReLU (z > 0),
    0/1/2 for Clip and hard-swish (below, between, at or above the upper bound)."""
    t = _thresholds(node)
    if len(t) == 1:
        return (z > t[0]).astype(np.uint8)
    return ((z > t[0]).astype(np.uint8) + (z >= t[1]).astype(np.uint8)).astype(np.uint8)


def native_trace(engine, x, y):
    """One native training step (forward and backward, as `loss_and_grads` runs it) that
    also returns the decisions it took: {value: state codes NCHW} for every fused or
    native activation, and {maxpool node name: (argmax as ih*W+iw NCHW, input shape)}."""
    vals, st = engine._forward(np.asarray(x, F32))
    infos, ctx = st.infos, st.ctx
    logits = engine._logits(vals)
    loss, dlogits = engine._loss(logits, np.asarray(y))
    grads, _, _ = engine._backward(st, dlogits)
    engine._harvest_counters()
    decisions: Dict[str, object] = {}
    for node in engine.model.nodes:
        if _thresholds(node) and node.output in infos:
            st = np.asarray(infos[node.output].state())
            decisions[node.output] = st.transpose(0, 3, 1, 2) if st.ndim == 4 else st.reshape(st.shape[0], -1)
        if node.op == "maxpool" and node.name in ctx:
            arg, shape = ctx[node.name]
            decisions[node.name] = (np.asarray(arg).transpose(0, 3, 1, 2).copy(), shape)
    return float(loss), grads, decisions


class TieAwareReference(DenseEngine):
    """The dense engine in float64 (the same numpy code, so rounding of the reference itself
    does not count against the engine under test), taking `decisions`' side at near-ties
    (and only there)."""

    def __init__(self, decisions, tau: float = TAU, dtype=np.float64):
        super().__init__(dtype)
        self.decisions, self.tau = decisions, tau
        self.snapped = 0
        self.ties = []  # (node name, index, what the reference had, what it took)

    def _fwd(self, node, xs, p):
        dec = self.decisions.get(node.output) if _thresholds(node) else None
        if dec is not None:
            xs = [self._snap_act(node, xs[0], dec)] + list(xs[1:])
        if node.op == "maxpool" and node.name in self.decisions:
            return self._maxpool(node, xs[0], *self.decisions[node.name])
        return super()._fwd(node, xs, p)

    def _snap_act(self, node, z, native_states):
        z = np.array(z, copy=True)
        mine = state_codes(node, z)
        diff = mine != native_states.reshape(mine.shape)
        if not diff.any():
            return z
        t = _thresholds(node)
        scale = max(float(np.abs(z).max()), 1e-30)
        theirs = native_states.reshape(mine.shape)[diff].astype(int)
        ours = mine[diff].astype(int)
        if (np.abs(theirs - ours) > 1).any():
            raise AssertionError(f"{node.name}: native state skips a region at {int((np.abs(theirs - ours) > 1).sum())} "
                                 "elements (a bug, not a tie)")
        thr = np.array([t[min(a, b)] for a, b in zip(ours, theirs)], np.float64) if len(t) > 1 else np.full(len(ours), t[0])
        zd = z[diff]
        far = np.abs(zd.astype(np.float64) - thr) > self.tau * scale
        if far.any():
            i = int(np.argmax(far))
            raise AssertionError(f"{node.name} ({node.op}): native state {theirs[i]} where the reference has {ours[i]} "
                                 f"at z = {zd[i]!r}, {abs(zd[i] - thr[i]) / scale:.2e} of the tensor's max from the "
                                 f"threshold {thr[i]}: {int(far.sum())} such elements (a bug, not a tie)")
        toward = np.where(theirs > ours, np.inf, -np.inf)
        for idx, zi, a, b in zip(np.argwhere(diff), zd, ours, theirs):
            self.ties.append((node.name, tuple(int(i) for i in idx), f"z={zi!r} state {a}", f"state {b}"))
        z[diff] = np.nextafter(thr.astype(z.dtype), toward.astype(z.dtype))
        self.snapped += int(diff.sum())
        return z

    def _maxpool(self, node, x, native_arg, native_shape):
        at = node.attrs
        best, (arg, xp_shape, pad) = ops.maxpool_forward(x, at)
        n, c, oh, ow = best.shape
        (kh, kw), (sh, sw), (pt, pl, _, _) = at["kernel"], at["stride"], at["pads"]
        h, w = x.shape[2], x.shape[3]
        ih, iw = native_arg // w, native_arg % w
        r = ih - (np.arange(oh) * sh - pt)[None, None, :, None]
        s = iw - (np.arange(ow) * sw - pl)[None, None, None, :]
        tap = (r * kw + s).astype(np.int32)
        diff = tap != arg
        if not diff.any():
            return best, (arg, xp_shape, pad, x.shape)
        xp = np.pad(x, pad, constant_values=-np.inf)
        nn, cc, hh, ww = np.nonzero(diff)
        rr, ss = tap[diff] // kw, tap[diff] % kw
        theirs = xp[nn, cc, hh * sh + rr, ww * sw + ss]
        ours = best[diff]
        scale = max(float(np.abs(x).max()), 1e-30)
        far = np.abs(ours.astype(np.float64) - theirs) > self.tau * scale
        if far.any():
            raise AssertionError(f"{node.name}: native max-pool picks a value {float(ours[far][0] - theirs[far][0]):.3g} "
                                 f"below the window's max at {int(far.sum())} outputs (a bug, not a tie)")
        for idx, o, t in zip(np.argwhere(diff), ours, theirs):
            self.ties.append((node.name, tuple(int(i) for i in idx), f"max {o!r} at tap {int(arg[tuple(idx)])}",
                              f"{t!r} at tap {int(tap[tuple(idx)])}"))
        arg = arg.copy()
        arg[diff] = tap[diff]
        best = best.copy()
        best[diff] = theirs
        self.snapped += int(diff.sum())
        return best, (arg, xp_shape, pad, x.shape)


def reference_gradients(model, x, y, decisions, loss: str = "cross_entropy"):
    """(loss, grads, snapped) of the dense engine, on the native side of near-ties."""
    ref = TieAwareReference(decisions)
    ref.load(model, loss=loss)
    lo, grads = ref.forward_backward_values(np.asarray(x, np.float64), np.asarray(y))[:2]
    return float(lo), grads, ref.snapped


class _MagnitudeEngine(DenseEngine):
    """The forward pass in magnitudes: |parameters|, |input|, activations passed through (every
    supported one has |f(z)| <= |z|, hard-swish's slope up to 1.5 aside), a batch-norm mean
    added rather than subtracted. Each value bounds the sum of |terms| that formed it."""

    def _prepare(self):
        self.params = {k: np.abs(v.astype(np.float64)) for k, v in self.params.items()}

    def _fwd(self, node, xs, p):
        if node.op in ACTIVATION_OPS:
            return xs[0], None
        if node.op == "gemm":
            node = copy.copy(node)
            node.attrs = {**node.attrs, "alpha": abs(node.attrs["alpha"]), "beta": abs(node.attrs["beta"])}
        if node.op == "batchnorm":
            g = lambda role: p[node.params[role]]  # noqa: E731
            return ops.batchnorm_forward(xs[0], g("scale"), g("B"), -g("mean"), g("var"), node.attrs["epsilon"])
        return super()._fwd(node, xs, p)


def forward_magnitudes(model, x) -> Dict[str, np.ndarray]:
    """value -> per element, a bound on the sum of |terms| that formed it in the forward pass.
    Float32 rounding of a value scales with this, not with the value, where the value is a
    small difference of large terms (a batch norm that cancels its input, say)."""
    eng = _MagnitudeEngine(np.float64)
    eng.load(model)
    return eng.forward_values(np.abs(np.asarray(x, np.float64)))


def backward_magnitudes(model, x, y, loss: str = "cross_entropy") -> Dict[str, np.ndarray]:
    """value -> per element, a bound on the sum of |terms| that formed dL/dvalue: the backward
    pass on the real forward (its activation masks and pool choices) with |parameters|, from the
    loss gradient's |terms|. Where d is a small difference of large terms (two nearly equal
    classifier rows, say), its rounding scales with this, not with d."""
    eng = DenseEngine(np.float64)
    eng.load(model, loss=loss)
    vals, caches = eng._forward(np.asarray(x, np.float64))
    z, y = vals[model.output_name], np.asarray(y)
    if loss == "cross_entropy":
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] += 1.0      # |p - onehot| <= p + onehot
        dz = p / len(y)
    else:
        dz = 2.0 * (np.abs(z) + 1.0) / z.size   # mse against targets in [0, 1]
    eng.params = {k: np.abs(v) for k, v in eng.params.items()}
    seen: Dict[str, np.ndarray] = {}
    eng._backward(vals, caches, dz, seen)
    return {k: np.abs(v) for k, v in seen.items()}


def reduction_magnitudes(model, x, y, loss: str = "cross_entropy"):
    """{initializer name: per element, the sum of |terms| of the final reduction that forms
    that gradient element} (sum over pixels and batch of |d| * |x| for a weight, of |d| for a
    bias, with |d| and |x| themselves bounded by the magnitudes of the terms that formed them).
    Float32 rounding of a gradient element scales with this, not with its value, where the
    element is a small difference of large terms."""
    real = DenseEngine()
    real.load(model, loss=loss)
    want, out = set(real.trainable), {}
    fmag = forward_magnitudes(model, x)
    dmag = backward_magnitudes(model, x, y, loss)
    for node in model.nodes:
        d = dmag.get(node.output)
        if d is None or not (set(node.params.values()) & want):
            continue
        x0 = fmag[node.inputs[0]]
        at = node.attrs
        get = lambda role: real.params[node.params[role]]  # noqa: E731
        if node.op == "conv":
            pt, pl, pb, pr = at["pads"]
            xp = np.pad(x0, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
            _, gw, gb = ops.conv_backward(d, xp, x0.shape, get("W"), at, False)
            parts = {"W": gw, "B": gb}
        elif node.op == "gemm":
            _, gw, gb = ops.gemm_backward(d, x0, get("W"), {**at, "alpha": abs(at["alpha"]), "beta": abs(at["beta"])},
                                          False)
            parts = {"W": gw, "B": gb}
        elif node.op == "batchnorm":
            inv = 1.0 / np.sqrt(get("var").astype(np.float64) + at["epsilon"])
            shape = (1, -1) + (1,) * (x0.ndim - 2)
            xhat = (x0 + np.abs(get("mean")).reshape(shape)) * inv.reshape(shape)
            axes = (0,) + tuple(range(2, d.ndim))
            parts = {"scale": (d * xhat).sum(axis=axes), "B": d.sum(axis=axes)}
        elif node.op == "add_param":
            b = get("B")
            parts = {"B": np.broadcast_to(d.sum(), b.shape) if b.size == 1 else d.reshape(-1, b.size).sum(0)}
        else:
            continue
        for role, m in parts.items():
            name = node.params.get(role)
            if name in want:
                out[name] = out.get(name, 0) + np.asarray(m, np.float64).reshape(real.params[name].shape)
    return out


RTOL = 1e-5  # of each element's scale (see assert_equal_up_to_rounding)


def assert_equal_up_to_rounding(what, loss, grads, ref_loss, ref, mags, summary="", rtol: float = RTOL):
    """Equal up to float summation order: each gradient element within `rtol` of the larger of
    its tensor's max |value| and its own sum of |terms| (`reduction_magnitudes`), which is
    what rounding scales with where an element is a small difference of large terms."""
    assert abs(loss - ref_loss) <= rtol * max(abs(ref_loss), 1e-6), f"{what}: loss {loss} != {ref_loss}\n{summary}"
    assert set(grads) == set(ref), f"{what}: gradient names differ: {sorted(set(grads) ^ set(ref))}\n{summary}"
    for k, want in ref.items():
        got = grads[k]
        assert got.shape == want.shape, f"{what}: {k} shape {got.shape} != {want.shape}"
        scale = np.maximum(max(float(np.abs(want).max()), 1e-12), mags[k])
        ratio = np.abs(got.astype(np.float64) - want) / scale
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        assert ratio[i] <= rtol, (f"{what}: {k}{list(i)} = {got[i]!r}, reference {want[i]!r}: off by {ratio[i]:.2e} "
                                  f"of max(|{k}|max, its sum of |terms|)\n{summary}")


def check_native(model, x, y, **engine_kw):
    """One native step against the tie-aware reference; returns the engine (for more checks)."""
    from edgetune.runtime.engines.native import NativeEngine

    eng = NativeEngine(**engine_kw)
    eng.load(model)
    loss, grads, decisions = native_trace(eng, x, y)
    ref_loss, ref, _ = reference_gradients(model, x, y, decisions)
    mags = reduction_magnitudes(model, x, y)
    assert_equal_up_to_rounding(f"native {engine_kw}", loss, grads, ref_loss, ref, mags)
    return eng
