"""numpy forward/backward of every IR op, NCHW. This is the readable definition of what
every engine computes; the activation derivatives follow torch's conventions. Every op
computes in the dtype of its input: float32 in training, float64 when tests use the
same code as a more precise reference."""
from __future__ import annotations

import numpy as np

# -- convolution ---------------------------------------------------------------
def _conv_geometry(x_shape, w_shape, attrs):
    n, c, h, w = x_shape
    k, cg, r, s = w_shape
    sh, sw = attrs["stride"]
    pt, pl, pb, pr = attrs["pads"]
    dh, dw = attrs["dilation"]
    oh = (h + pt + pb - dh * (r - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (s - 1) - 1) // sw + 1
    return oh, ow


def _taps(xp, r, s, attrs, oh, ow):
    sh, sw = attrs["stride"]
    dh, dw = attrs["dilation"]
    return (slice(None), slice(None), slice(r * dh, r * dh + sh * (oh - 1) + 1, sh),
            slice(s * dw, s * dw + sw * (ow - 1) + 1, sw))


def conv_forward(x, W, B, attrs):
    """Grouped, strided, dilated 2-D convolution (ONNX Conv)."""
    n, c, h, w = x.shape
    k, cg, R, S = W.shape
    g = attrs["group"]
    oh, ow = _conv_geometry(x.shape, W.shape, attrs)
    pt, pl, pb, pr = attrs["pads"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    wg = W.reshape(g, k // g, cg, R, S)
    out = np.zeros((n, g, k // g, oh, ow), x.dtype)
    for r in range(R):
        for s in range(S):
            patch = xp[_taps(xp, r, s, attrs, oh, ow)].reshape(n, g, cg, oh, ow)
            out += np.einsum("ngchw,gkc->ngkhw", patch, wg[..., r, s], optimize=True)
    out = out.reshape(n, k, oh, ow)
    if B is not None:
        out += B.reshape(1, k, 1, 1)
    return out, xp


def conv_backward(d, xp, x_shape, W, attrs, need_dx):
    """Return (dx or None, dW, dB) for conv_forward."""
    n, c, h, w = x_shape
    k, cg, R, S = W.shape
    g = attrs["group"]
    _, _, oh, ow = d.shape
    pt, pl, pb, pr = attrs["pads"]
    dg = d.reshape(n, g, k // g, oh, ow)
    wg = W.reshape(g, k // g, cg, R, S)
    dW = np.zeros_like(wg)
    dxp = np.zeros_like(xp) if need_dx else None
    for r in range(R):
        for s in range(S):
            sl = _taps(xp, r, s, attrs, oh, ow)
            patch = xp[sl].reshape(n, g, cg, oh, ow)
            dW[..., r, s] = np.einsum("ngkhw,ngchw->gkc", dg, patch, optimize=True)
            if need_dx:
                dxp[sl] += np.einsum("ngkhw,gkc->ngchw", dg, wg[..., r, s],
                                     optimize=True).reshape(n, c, oh, ow)
    dx = dxp[:, :, pt:pt + h, pl:pl + w] if need_dx else None
    return dx, dW.reshape(W.shape), d.sum(axis=(0, 2, 3))


# -- gemm ------------------------------------------------------------------------
def gemm_forward(x, W, B, attrs):
    """ONNX Gemm with transA=0: alpha * x @ op(W) + beta * B."""
    t = x.dtype.type
    wt = W.T if attrs["transB"] else W
    y = x @ wt
    if attrs["alpha"] != 1.0:
        y = y * t(attrs["alpha"])
    if B is not None:
        y = y + t(attrs["beta"]) * B
    return y.astype(x.dtype, copy=False)


def gemm_backward(d, x, W, attrs, need_dx):
    t = d.dtype.type
    alpha = t(attrs["alpha"])
    wt = W.T if attrs["transB"] else W          # (in, out)
    dx = (d @ wt.T) * alpha if need_dx else None
    dwt = (x.T @ d) * alpha                      # (in, out)
    dW = dwt.T if attrs["transB"] else dwt
    return dx, np.ascontiguousarray(dW), d.sum(axis=0) * t(attrs["beta"])


# -- activations: (forward, derivative from the pre-activation z) ------------------
def act_forward(op, z, attrs):
    t = z.dtype.type
    if op == "relu":
        return np.maximum(z, t(0))
    if op == "clip":
        return np.clip(z, t(attrs["min"]), t(attrs["max"]))
    if op == "hardswish":
        return z * np.clip(z + t(3), t(0), t(6)) / t(6)
    if op == "hardsigmoid":
        return np.clip(t(attrs["alpha"]) * z + t(attrs["beta"]), t(0), t(1))
    if op == "leakyrelu":
        return np.where(z > 0, z, z * t(attrs["alpha"]))
    if op == "sigmoid":
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(z.dtype)
    raise ValueError(op)


def act_derivative(op, z, a, attrs):
    """f'(z). Where it is zero is the set G (docs/ARCHITECTURE.md, position constraints)."""
    t = z.dtype.type
    if op == "relu":
        return (z > 0).astype(z.dtype)
    if op == "clip":   # torch's hardtanh: passes strictly inside the bounds
        return ((z > attrs["min"]) & (z < attrs["max"])).astype(z.dtype)
    if op == "hardswish":  # torch: 0 up to -3, z/3 + 1/2 strictly between -3 and 3, 1 from 3 on
        return np.where(z <= -3, t(0), np.where(z < 3, z / t(3) + t(0.5), t(1))).astype(z.dtype)
    if op == "hardsigmoid":
        u = t(attrs["alpha"]) * z + t(attrs["beta"])
        return np.where((u > 0) & (u < 1), t(attrs["alpha"]), t(0)).astype(z.dtype)
    if op == "leakyrelu":
        return np.where(z > 0, t(1), t(attrs["alpha"])).astype(z.dtype)
    if op == "sigmoid":
        return (a * (1 - a)).astype(z.dtype)
    raise ValueError(op)


# -- pooling -------------------------------------------------------------------------
def _pool_out(size, k, s, p0, p1, ceil):
    span = size + p0 + p1 - k
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= size + p0:   # last window must start inside the input
        o -= 1
    return o


def pool_geometry(x_shape, attrs):
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = attrs["kernel"], attrs["stride"], attrs["pads"]
    oh = _pool_out(x_shape[2], kh, sh, pt, pb, attrs["ceil_mode"])
    ow = _pool_out(x_shape[3], kw, sw, pl, pr, attrs["ceil_mode"])
    # extra bottom/right padding so every window slice stays in bounds
    eb = max(0, (oh - 1) * sh + kh - (x_shape[2] + pt + pb))
    er = max(0, (ow - 1) * sw + kw - (x_shape[3] + pl + pr))
    return oh, ow, ((0, 0), (0, 0), (pt, pb + eb), (pl, pr + er))


def _windows(attrs, oh, ow):
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    for r in range(kh):
        for s in range(kw):
            yield r * kw + s, (slice(None), slice(None), slice(r, r + sh * (oh - 1) + 1, sh),
                               slice(s, s + sw * (ow - 1) + 1, sw))


def maxpool_forward(x, attrs):
    oh, ow, pad = pool_geometry(x.shape, attrs)
    xp = np.pad(x, pad, constant_values=-np.inf)
    best = np.full(x.shape[:2] + (oh, ow), -np.inf, x.dtype)
    arg = np.zeros(best.shape, np.int32)
    for idx, sl in _windows(attrs, oh, ow):
        v = xp[sl]
        better = v > best          # strict: the first maximum wins, like torch
        best = np.where(better, v, best)
        arg = np.where(better, idx, arg)
    return best, (arg, xp.shape, pad)


def maxpool_backward(d, cache, x_shape, attrs):
    arg, xp_shape, pad = cache
    oh, ow = d.shape[2:]
    dxp = np.zeros(xp_shape, d.dtype)
    for idx, sl in _windows(attrs, oh, ow):
        dxp[sl] += np.where(arg == idx, d, d.dtype.type(0))
    return dxp[:, :, pad[2][0]:pad[2][0] + x_shape[2], pad[3][0]:pad[3][0] + x_shape[3]]


def _avg_counts(x_shape, attrs, oh, ow, pad, dtype):
    ones = np.zeros((1, 1) + tuple(x_shape[2:]), dtype) + 1
    if attrs["count_include_pad"]:   # padding (not the ceil overhang) counts as elements
        (pt, pl, pb, pr) = attrs["pads"]
        ones = np.pad(ones, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=1)
        extra = ((0, 0), (0, 0), (0, pad[2][1] - pb), (0, pad[3][1] - pr))
        ones = np.pad(ones, extra)
    else:
        ones = np.pad(ones, pad)
    cnt = np.zeros((1, 1, oh, ow), dtype)
    for _, sl in _windows(attrs, oh, ow):
        cnt += ones[sl]
    return cnt


def avgpool_forward(x, attrs):
    oh, ow, pad = pool_geometry(x.shape, attrs)
    xp = np.pad(x, pad)
    acc = np.zeros(x.shape[:2] + (oh, ow), x.dtype)
    for _, sl in _windows(attrs, oh, ow):
        acc += xp[sl]
    cnt = _avg_counts(x.shape, attrs, oh, ow, pad, x.dtype)
    return acc / cnt, (cnt, xp.shape, pad)


def avgpool_backward(d, cache, x_shape, attrs):
    cnt, xp_shape, pad = cache
    oh, ow = d.shape[2:]
    dxp = np.zeros(xp_shape, d.dtype)
    dn = d / cnt
    for _, sl in _windows(attrs, oh, ow):
        dxp[sl] += dn
    return dxp[:, :, pad[2][0]:pad[2][0] + x_shape[2], pad[3][0]:pad[3][0] + x_shape[3]]


# -- batch norm (frozen running statistics) ------------------------------------------------
def batchnorm_forward(x, scale, bias, mean, var, eps):
    inv = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(x.dtype)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - mean.reshape(shape)) * inv.reshape(shape)
    return xhat * scale.reshape(shape) + bias.reshape(shape), (xhat, inv)


def batchnorm_backward(d, cache, scale):
    xhat, inv = cache
    axes = (0,) + tuple(range(2, d.ndim))
    shape = (1, -1) + (1,) * (d.ndim - 2)
    return d * (scale * inv).reshape(shape), (d * xhat).sum(axis=axes), d.sum(axis=axes)


def reshape_target(shape, x_shape):
    """ONNX Reshape semantics (0 copies the input dim, -1 is inferred)."""
    out = [x_shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if -1 in out:
        known = int(np.prod([s for s in out if s != -1]))
        out[out.index(-1)] = int(np.prod(x_shape)) // max(known, 1)
    return tuple(out)
