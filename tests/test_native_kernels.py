"""Differential tests of edgetune._native against plain numpy references
(and torch autograd where torch is installed). No timing here."""
from __future__ import annotations

import numpy as np
import pytest

from edgetune import _native  # required: a broken build must fail, not skip
from requires import need

ACTS = {"none": 0, "relu": 1, "relu6": 2, "hardswish": 3, "leaky": 4, "sigmoid": 5}
ALPHA = 0.1


# ----------------------------------------------------------------------------- numpy references
def act_f(z, act, alpha=ALPHA, lo=0.0, hi=6.0):
    z = z.astype(np.float64)
    if act == 0:
        return z
    if act == 1:
        return np.maximum(z, 0)
    if act == 2:
        return np.clip(z, lo, hi)
    if act == 3:
        return z * np.clip(z + 3, 0, 6) / 6
    if act == 4:
        return np.where(z > 0, z, z * alpha)
    if act == 5:
        return 1 / (1 + np.exp(-z))
    raise ValueError(act)


def act_df(z, act, alpha=ALPHA, lo=0.0, hi=6.0):
    """Derivative conventions of torch autograd: relu'(0)=0, relu6/hardtanh strict inside (lo, hi),
    hardswish'(x) = 0 for x <= -3, x/3 + 1/2 for -3 < x < 3, 1 for x >= 3 (torch 2.x)."""
    z = z.astype(np.float64)
    if act == 0:
        return np.ones_like(z)
    if act == 1:
        return (z > 0).astype(np.float64)
    if act == 2:
        return ((z > lo) & (z < hi)).astype(np.float64)
    if act == 3:
        return np.where(z <= -3, 0.0, np.where(z < 3, z / 3 + 0.5, 1.0))
    if act == 4:
        return np.where(z > 0, 1.0, alpha)
    if act == 5:
        s = 1 / (1 + np.exp(-z))
        return s * (1 - s)
    raise ValueError(act)


def out_hw(H, W, R, S, stride, pads, dil):
    OH = (H + pads[0] + pads[2] - dil[0] * (R - 1) - 1) // stride[0] + 1
    OW = (W + pads[1] + pads[3] - dil[1] * (S - 1) - 1) // stride[1] + 1
    return OH, OW


def _patches(x, R, S, stride, pads, dil, OH, OW):
    xp = np.pad(x, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3]), (0, 0)))
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dil[0], s * dil[1]
            yield r, s, (h0, w0), xp[:, h0:h0 + stride[0] * (OH - 1) + 1:stride[0],
                                      w0:w0 + stride[1] * (OW - 1) + 1:stride[1], :]


def conv_fwd(x, Wt, b, stride, pads, dil, groups):
    x = x.astype(np.float64)
    Wt = Wt.astype(np.float64)
    N, H, W, C = x.shape
    K, Cg, R, S = Wt.shape
    Kg = K // groups
    OH, OW = out_hw(H, W, R, S, stride, pads, dil)
    z = np.zeros((N, OH, OW, K))
    for r, s, _, p in _patches(x, R, S, stride, pads, dil, OH, OW):
        for g in range(groups):
            z[..., g * Kg:(g + 1) * Kg] += np.einsum("nhwc,kc->nhwk", p[..., g * Cg:(g + 1) * Cg],
                                                     Wt[g * Kg:(g + 1) * Kg, :, r, s])
    if b is not None:
        z += b
    return z


def conv_bwd(x, Wt, d, stride, pads, dil, groups):
    x = x.astype(np.float64)
    Wt = Wt.astype(np.float64)
    d = d.astype(np.float64)
    N, H, W, C = x.shape
    K, Cg, R, S = Wt.shape
    Kg = K // groups
    OH, OW = d.shape[1:3]
    gxp = np.zeros((N, H + pads[0] + pads[2], W + pads[1] + pads[3], C))
    dW = np.zeros_like(Wt)
    for r, s, (h0, w0), p in _patches(x, R, S, stride, pads, dil, OH, OW):
        for g in range(groups):
            dg = d[..., g * Kg:(g + 1) * Kg]
            gxp[:, h0:h0 + stride[0] * (OH - 1) + 1:stride[0], w0:w0 + stride[1] * (OW - 1) + 1:stride[1],
                g * Cg:(g + 1) * Cg] += np.einsum("nhwk,kc->nhwc", dg, Wt[g * Kg:(g + 1) * Kg, :, r, s])
            dW[g * Kg:(g + 1) * Kg, :, r, s] = np.einsum("nhwk,nhwc->kc", dg, p[..., g * Cg:(g + 1) * Cg])
    return gxp[:, pads[0]:pads[0] + H, pads[1]:pads[1] + W, :], dW, d.sum(axis=(0, 1, 2))


def close(got, ref):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    atol = 1e-5 * max(np.abs(ref).max(initial=0.0), 1e-30)
    ok = np.allclose(got, ref, rtol=1e-4, atol=atol)
    if not ok:
        i = np.unravel_index(np.argmax(np.abs(got - ref)), ref.shape)
        raise AssertionError(f"max |diff| {np.abs(got - ref).max():.3g} at {i}: got {got[i]} ref {ref[i]}")


def sparse_input(rng, shape, sparsity):
    x = rng.standard_normal(shape).astype(np.float32)
    if sparsity >= 1.0:
        return np.zeros(shape, np.float32)
    x[rng.random(shape) < sparsity] = 0.0
    return x


# ----------------------------------------------------------------------------- activation
@pytest.mark.parametrize("act", list(ACTS.values()))
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (13, 9), (3, 4, 5, 24), (37, 16)])   # C % 8 == 0: vector rows
def test_activate_forward_and_grad(act, dense, shape):
    rng = np.random.default_rng(act * 7 + len(shape))
    z = (rng.standard_normal(shape) * 4).astype(np.float32)
    z.flat[:6] = [0.0, -3.0, 3.0, 6.0, -6.0, 1e-8]  # boundary points
    a, info = _native.activate(z, act, alpha=ALPHA, dense=dense)
    close(a, act_f(z, act))
    close(info.decompress().reshape(shape), act_f(z, act))
    ga = rng.standard_normal(shape).astype(np.float32)
    close(info.grad_z(ga).reshape(shape), ga * act_df(z, act))
    # G as stored must contain every position with f' != 0 (exactness)
    assert np.all(info.mask_g().reshape(shape) | (act_df(z, act) == 0))
    # A lists hold exactly the non-zeros of a (for constrained activations)
    if act in (1, 2, 3):
        assert np.array_equal(info.mask_a().reshape(shape), act_f(z, act) != 0)
        assert info.nnz == int(np.count_nonzero(act_f(z, act)))
        ptr, idx = info.pixel_lists()
        C = shape[-1]
        m = np.zeros((ptr.size - 1, C), bool)
        for p in range(ptr.size - 1):
            m[p, idx[ptr[p]:ptr[p + 1]]] = True
        if act == 2:   # ReLU6 state codes: 0 zero, 1 linear, 2 saturated
            want = ((z > 0) & (z < 6)).astype(np.int64) + 2 * (z >= 6)
            assert np.array_equal(np.asarray(info.state()).reshape(shape), want)
        C = shape[-1]
        a2 = act_f(z, act).reshape(-1, C)
        assert np.array_equal(info.channel_counts(), np.count_nonzero(a2, axis=0))
        assert np.array_equal(info.pixel_counts()[0], np.count_nonzero(a2, axis=1))
        assert np.array_equal(info.pixel_counts()[1], np.count_nonzero(act_df(z, act).reshape(-1, C), axis=1))
        if not dense:
            assert np.array_equal(m.reshape(shape), act_f(z, act) != 0)
            if act in (1, 2):   # hard-swish keeps z where curved (test_stored_bytes_hardswish_...)
                assert np.array_equal(info.packed_values(), a2[a2 != 0])
            gp, gi = info.g_lists()
            mg = np.zeros_like(m)
            for p in range(gp.size - 1):
                mg[p, gi[gp[p]:gp[p + 1]]] = True
            assert np.array_equal(mg.reshape(shape), act_df(z, act) != 0)


def test_clip_general_bounds():
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((4, 3, 3, 8)) * 3).astype(np.float32)
    for lo, hi in [(-1.0, 1.0), (0.5, 2.0), (0.0, 3.0)]:
        a, info = _native.activate(z, "clip", lo=lo, hi=hi)
        close(a, act_f(z, 2, lo=lo, hi=hi))
        ga = rng.standard_normal(z.shape).astype(np.float32)
        close(info.grad_z(ga), ga * act_df(z, 2, lo=lo, hi=hi))
        assert info.constrained == (lo == 0.0)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("C", [6, 16])   # 16: vector rows
def test_analyze_input(dense, C):
    rng = np.random.default_rng(1)
    x = sparse_input(rng, (3, 4, 5, C), 0.6)
    x[0, 0, 0, :3] = [-1.0, -0.0, 2.0]   # negative values and -0.0 (a zero) too
    info = _native.analyze_input(x, dense=dense)
    close(info.decompress(), x)
    assert info.nnz == np.count_nonzero(x)
    assert info.shape == (3, 4, 5, C)
    assert np.array_equal(info.channel_counts(), np.count_nonzero(x.reshape(-1, C), axis=0))
    assert np.array_equal(info.pixel_counts()[0], np.count_nonzero(x.reshape(-1, C), axis=1))
    if not dense:
        ptr, idx = info.pixel_lists()
        m = np.zeros((ptr.size - 1, C), bool)
        for p in range(ptr.size - 1):
            m[p, idx[ptr[p]:ptr[p + 1]]] = True
        assert np.array_equal(m, x.reshape(-1, C) != 0)
        assert np.array_equal(info.packed_values(), x.reshape(-1, C)[m])
        # min_sparsity: listed only when at least that fraction is zero (x is ~60% zeros)
        assert not _native.analyze_input(x, min_sparsity=0.5).dense
        planned = _native.analyze_input(x, min_sparsity=0.7)
        assert planned.dense and planned.nnz == np.count_nonzero(x)
        close(planned.decompress(), x)


def test_stored_bytes_relu():
    rng = np.random.default_rng(2)
    for s in (0.0, 0.3, 0.7, 0.95, 1.0):
        z = rng.standard_normal((4, 7, 9, 13)).astype(np.float32)
        z[rng.random(z.shape) < s] = -1.0
        z[z == 0] = 1.0
        a, info = _native.activate(z, "relu")
        dense = a.size * 4
        assert info.dense_bytes() == dense
        sparsity = 1.0 - np.count_nonzero(a) / a.size
        assert info.stored_bytes() <= (1 - sparsity) * dense + dense / 32 + 64
        assert info.plan_bytes() > 0


def test_stored_bytes_other_acts():
    rng = np.random.default_rng(4)
    z = (rng.standard_normal((2, 6, 6, 16)) * 4).astype(np.float32)
    dense = z.size * 4
    _, i6 = _native.activate(z, "relu6")
    nz = np.count_nonzero(act_f(z, 2))
    assert i6.stored_bytes() <= nz * 4 + dense / 16 + 64
    _, ih = _native.activate(z, "hardswish")
    curved = np.count_nonzero((z > -3) & (z < 3))
    assert ih.stored_bytes() <= (np.count_nonzero(act_f(z, 3)) + curved) * 4 + dense / 16 + 64
    _, il = _native.activate(z, "leaky_relu")
    assert il.stored_bytes() <= dense + dense / 32 + 64


def test_stored_bytes_hardswish_one_float_per_nonzero():
    """hard-swish keeps 2-bit regions plus one float per non-zero (z where curved,
    a where identity): at most dense + dense/16 even when almost everything is curved."""
    rng = np.random.default_rng(11)
    z = rng.uniform(-2.9, 2.9, (3, 8, 8, 24)).astype(np.float32)
    z.reshape(-1)[::17] = 4.0    # identity region
    z.reshape(-1)[5::23] = -5.0  # zero region
    z.reshape(-1)[7::31] = 0.0   # curved with a == 0
    dense = z.size * 4
    for dense_mode in (False, True):
        a, info = _native.activate(z, "hardswish", dense=dense_mode)
        assert info.stored_bytes() <= dense + dense / 16 + 64
        if not dense_mode:
            assert info.stored_bytes() <= np.count_nonzero(a) * 4 + dense / 16 + 64
        # a is reconstructed exactly from the stored z / a
        assert np.array_equal(info.decompress(), a)
        ptr, idx = info.pixel_lists()
        pv = info.packed_values()
        if not dense_mode:
            flat_z = z.reshape(-1, z.shape[-1])
            flat_a = a.reshape(-1, a.shape[-1])
            rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
            zz, aa = flat_z[rows, idx], flat_a[rows, idx]
            curved = (zz > -3) & (zz < 3)
            assert np.array_equal(pv[curved], zz[curved])
            assert np.array_equal(pv[~curved], aa[~curved])
        g = rng.standard_normal(z.shape).astype(np.float32)
        close(info.grad_z(g), g * act_df(z, 3))
        f32 = np.float32
        fp = np.where(z <= -3, f32(0), np.where(z < 3, z / f32(3) + f32(0.5), f32(1))).astype(f32)
        assert np.array_equal(info.grad_z(g), np.where(fp != 0, g * fp, f32(0)))

# ----------------------------------------------------------------------------- conv
# (N, H, W, C, K, (R, S), stride, pads(t,l,b,r), dilation, groups)
CONV_CASES = [
    (2, 7, 9, 3, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (1, 7, 9, 3, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    (2, 8, 7, 6, 10, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
    (2, 9, 9, 12, 8, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    (2, 6, 6, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),       # depthwise
    (1, 7, 5, 6, 6, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 6),       # depthwise, stride 2
    (2, 9, 9, 40, 40, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), 40),    # depthwise, 49 taps, 32 + 8 channels
    (2, 5, 5, 4, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),       # channel multiplier 2
    (2, 5, 6, 70, 130, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),    # 1x1, K > 64, tails
    (3, 5, 6, 9, 17, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),      # 1x1 strided
    (1, 1, 1, 5, 3, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),       # single pixel
    (2, 10, 10, 64, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),   # the kernel notes' shape (docs/ARCHITECTURE.md), small batch
]


def make_layer(case, act, rng, bias_shift=0.0):
    N, H, W, C, K, (R, S), st, pads, dil, groups = case
    Wt = (rng.standard_normal((K, C // groups, R, S)) / np.sqrt(C // groups * R * S)).astype(np.float32)
    b = (rng.standard_normal(K) * 0.3 + bias_shift).astype(np.float32)
    L = _native.ConvLayer(C, K, kernel=(R, S), stride=st, pads=pads, dilation=dil, groups=groups, act=act,
                          alpha=ALPHA)
    L.set_weights(Wt, b)
    return L, Wt, b


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"c{i}" for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("act", [1, 2, 3, 4, 0, 5])
def test_conv_fp_bp_wg(case, act):
    N, H, W, C, K, (R, S), st, pads, dil, groups = case
    rng = np.random.default_rng(hash((case, act)) % 2**32)
    x = sparse_input(rng, (N, H, W, C), 0.5) * 2
    L, Wt, b = make_layer(case, act, rng)
    z = conv_fwd(x, Wt, b, st, pads, dil, groups)
    ga = rng.standard_normal(z.shape).astype(np.float32)
    d = ga * act_df(z, act)
    gx, dWr, dbr = conv_bwd(x, Wt, d, st, pads, dil, groups)
    results = []
    for dense in (False, True):
        a, info = L.forward(x, dense=dense)
        close(a, act_f(z, act))
        close(info.decompress(), act_f(z, act))
        gin, dW, db = L.backward(ga, need_input_grad=True, mask_input_grad=False)
        close(gin, gx)
        close(dW, dWr)
        close(db, dbr)
        results.append((a, gin, dW, db))
        c = L.counters()
        for ph in ("fp", "bp", "wg"):
            # vector-lane waste: channels are padded to a multiple of the vector width per group
            n, vw = (C if ph == "bp" else K) // groups, _native.VECTOR_FLOATS
            waste = 1.0 if L.depthwise else (-(-n // vw) * vw) / n
            assert 0 <= c[ph]["required"] <= c[ph]["executed"] <= c[ph]["dense"] * waste, (ph, c)
    # dense switch gives the same results (up to summation order)
    for u, v in zip(results[0], results[1]):
        close(u, v)


@pytest.mark.parametrize("act", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 16])   # 16: depthwise consumer
def test_dense_planned_output_feeds_a_sparse_layer(act, groups):
    """out_dense=True: the output info has no lists (dense mode) yet the same a, states and G;
    a sparse-mode consumer iterates it densely and computes what it computes on the listed info."""
    rng = np.random.default_rng(40 + act)
    x = sparse_input(rng, (2, 5, 6, 8), 0.5)
    first = _native.ConvLayer(8, 16, kernel=(3, 3), pads=(1, 1, 1, 1), act=act)
    first.set_weights(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.3,
                      rng.standard_normal(16).astype(np.float32))
    a_listed, listed = first.forward(x)
    a_planned, planned = first.forward(x, out_dense=True)
    assert not listed.dense and planned.dense
    close(a_planned, a_listed)
    assert np.array_equal(planned.mask_g(), listed.mask_g()) and planned.nnz == listed.nnz
    second = _native.ConvLayer(16, 16, kernel=(3, 3), pads=(1, 1, 1, 1), groups=groups, act=act)
    second.set_weights(rng.standard_normal((16, 16 // groups, 3, 3)).astype(np.float32) * 0.3, None)
    ga = rng.standard_normal((2, 5, 6, 16)).astype(np.float32)
    outs = []
    for info in (listed, planned):
        a, _ = second.forward(info)
        outs.append((a,) + second.backward(ga, prev_info=info))
    for u, v in zip(*outs):
        close(u, v)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[-1] == 1], ids=lambda c: f"{c[3]}to{c[4]}k{c[5][0]}s{c[6][0]}")
@pytest.mark.parametrize("prev_act", [1, 2, 3])
def test_dense_error_layer_masks_input_grad_by_prev_g(case, prev_act):
    """A conv with no activation (dense error) after a constrained input: g_in is masked by the
    input's G, also for strided, dilated and tail-channel shapes."""
    N, H, W, C, K, (R, S), st, pads, dil, groups = case
    rng = np.random.default_rng(60 + prev_act + C)
    zin = (rng.standard_normal((N, H, W, C)) * 3).astype(np.float32)
    xin, xinfo = _native.activate(zin, prev_act)
    L, Wt, b = make_layer(case, 0, rng)
    a, _ = L.forward(xinfo)
    z = conv_fwd(xin, Wt, b, st, pads, dil, groups)
    close(a, z)
    ga = rng.standard_normal(z.shape).astype(np.float32)
    gin, dW, db = L.backward(ga)
    gx, dWr, dbr = conv_bwd(xin, Wt, ga, st, pads, dil, groups)
    close(gin, gx * (act_df(zin, prev_act) != 0))
    close(dW, dWr)
    close(db, dbr)
    c = L.counters()["bp"]
    assert 0 < c["required"] <= c["executed"]


@pytest.mark.parametrize("act", [1, 2, 3])
def test_conv_chain_masks_input_grad(act):
    """Input coming from a constrained activation: g_in is masked by its G, which is exact."""
    rng = np.random.default_rng(10 + act)
    case = (2, 6, 7, 10, 12, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    zin = (rng.standard_normal((2, 6, 7, 10)) * 3).astype(np.float32)
    xin, xinfo = _native.activate(zin, act)
    L, Wt, b = make_layer(case, act, rng)
    for dense in (False, True):
        a, info = L.forward(xinfo, dense=dense)
        z = conv_fwd(xin, Wt, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
        close(a, act_f(z, act))
        ga = rng.standard_normal(z.shape).astype(np.float32)
        gin, dW, db = L.backward(ga)  # masked by the input's G by default
        gx, dWr, _ = conv_bwd(xin, Wt, ga * act_df(z, act), (1, 1), (1, 1, 1, 1), (1, 1), 1)
        close(gin, gx * (act_df(zin, act) != 0))
        close(dW, dWr)
        # explicit prev_info gives the same
        gin2, _, _ = L.backward(ga, prev_info=xinfo)
        close(gin2, gin)


def test_need_flags_and_first_layer():
    rng = np.random.default_rng(5)
    case = CONV_CASES[0]
    L, Wt, b = make_layer(case, 1, rng)
    x = sparse_input(rng, case[:3] + (case[3],), 0.3)
    a, _ = L.forward(x)
    ga = rng.standard_normal(a.shape).astype(np.float32)
    gin, dW, db = L.backward(ga, need_input_grad=False)
    assert gin is None and dW is not None
    assert L.counters()["bp"]["executed"] == 0
    gin, dW, db = L.backward(ga, need_weight_grad=False)
    assert dW is None and db is None and gin is not None
    a2, info = L.forward(x, want_a=False)
    assert a2 is None and info.shape == a.shape


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[3], CONV_CASES[4]])
def test_full_and_zero_sparsity(case):
    N, H, W, C, K, (R, S), st, pads, dil, groups = case
    rng = np.random.default_rng(6)
    # all-zero input
    L, Wt, b = make_layer(case, 1, rng)
    x = np.zeros((N, H, W, C), np.float32)
    a, info = L.forward(x)
    close(a, act_f(conv_fwd(x, Wt, b, st, pads, dil, groups), 1))
    c = L.counters()
    assert c["fp"]["required"] == 0 and c["fp"]["executed"] == 0
    ga = rng.standard_normal(a.shape).astype(np.float32)
    gin, dW, db = L.backward(ga, mask_input_grad=False)
    z = conv_fwd(x, Wt, b, st, pads, dil, groups)
    gx, dWr, dbr = conv_bwd(x, Wt, ga * act_df(z, 1), st, pads, dil, groups)
    close(gin, gx)
    assert np.all(dW == 0) and L.counters()["wg"]["required"] == 0
    # all-negative pre-activations: everything is zero, d is zero
    L2, Wt2, b2 = make_layer(case, 1, rng, bias_shift=-1e4)
    x = sparse_input(rng, (N, H, W, C), 0.2)
    a, info = L2.forward(x)
    assert np.all(a == 0) and info.nnz == 0 and info.sparsity == 1.0
    gin, dW, db = L2.backward(ga, mask_input_grad=False)
    assert np.all(gin == 0) and np.all(dW == 0) and np.all(db == 0)
    c = L2.counters()
    assert c["bp"]["required"] == 0 and c["wg"]["required"] == 0
    if groups == 1:
        assert c["bp"]["executed"] == 0 and c["wg"]["executed"] == 0


def _group_counts(mask, groups):
    N, H, W, C = mask.shape
    return mask.reshape(N, H, W, groups, C // groups).sum(-1).astype(np.float64)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[3], CONV_CASES[2], CONV_CASES[4], CONV_CASES[1]])
@pytest.mark.parametrize("dense", [False, True])
def test_counters_exact(case, dense):
    N, H, W, C, K, (R, S), st, pads, dil, groups = case
    Cg, Kg = C // groups, K // groups
    rng = np.random.default_rng(7)
    zin = rng.standard_normal((N, H, W, C)).astype(np.float32)
    xin, xinfo = _native.activate(zin, "relu")
    L, Wt, b = make_layer(case, 1, rng)
    a, info = L.forward(xinfo, dense=dense)
    ga = rng.standard_normal(a.shape).astype(np.float32)
    L.backward(ga)
    c = L.counters()
    A = xin != 0                      # input non-zeros
    Gp = zin > 0                      # previous layer's G (ReLU: = A)
    G = info.mask_g()                 # this layer's G
    assert np.array_equal(G, a > 0)
    ones = np.ones((groups, 1, R, S), np.float32)
    tapsum = lambda m: conv_fwd(_group_counts(m, groups), ones, None, st, pads, dil, groups)  # (N,OH,OW,groups)
    gc = _group_counts(G, groups)
    valid = conv_fwd(np.ones((N, H, W, groups)), ones, None, st, pads, dil, groups)
    dense_macs = valid.sum() * Cg * Kg
    assert c["fp"]["dense"] == c["bp"]["dense"] == c["wg"]["dense"] == dense_macs
    assert c["fp"]["required"] == tapsum(A).sum() * Kg
    assert c["wg"]["required"] == (tapsum(A) * gc).sum()
    # BP: pairs (o, tap) with d in G(o) and the input position in G_prev
    assert c["bp"]["required"] == (tapsum(Gp) * gc).sum()
    for ph in ("fp", "bp", "wg"):
        assert c[ph]["required"] <= c[ph]["executed"] <= c[ph]["dense"] * _native.VECTOR_FLOATS
    if dense:
        assert c["fp"]["executed"] >= c["fp"]["dense"]


def test_weights_are_copied():
    rng = np.random.default_rng(8)
    case = CONV_CASES[0]
    L, Wt, b = make_layer(case, 0, rng)
    x = sparse_input(rng, (2, 7, 9, 3), 0.0)
    a1, _ = L.forward(x)
    Wt[:] = 0
    a2, _ = L.forward(x)
    close(a2, a1)  # set_weights copies; must be called again after an update
    L.set_weights(Wt, b)
    a3, _ = L.forward(x)
    close(a3, np.broadcast_to(b, a3.shape))


def test_bad_input_messages():
    L = _native.ConvLayer(3, 4, kernel=(3, 3))
    with pytest.raises(RuntimeError, match="set_weights"):
        L.forward(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        L.set_weights(np.zeros((4, 3, 2, 2), np.float32))
    L.set_weights(np.zeros((4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        L.forward(np.zeros((1, 5, 5, 2), np.float32))
    with pytest.raises(ValueError, match="smaller"):
        L.forward(np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="groups"):
        _native.ConvLayer(3, 4, groups=2)
    with pytest.raises(ValueError, match="activation"):
        _native.ConvLayer(3, 4, act="gelu")


# ----------------------------------------------------------------------------- gemm
# (3, 4099, 4101): more than 64 register-tile blocks of inputs and outputs at every vector width
@pytest.mark.parametrize("N,F,O", [(1, 7, 3), (5, 33, 10), (9, 130, 67), (4, 513, 9), (3, 4099, 4101)])
@pytest.mark.parametrize("act", [1, 2, 3, 0, 4])
def test_gemm(N, F, O, act):
    rng = np.random.default_rng(N * 1000 + F + act)
    x = sparse_input(rng, (N, F), 0.6)
    Wt = (rng.standard_normal((O, F)) / np.sqrt(F)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    G = _native.GemmLayer(F, O, act=act, alpha=ALPHA)
    G.set_weights(Wt, b)
    z = x.astype(np.float64) @ Wt.T.astype(np.float64) + b
    ga = rng.standard_normal((N, O)).astype(np.float32)
    d = ga * act_df(z, act)
    outs = []
    for dense in (False, True):
        a, info = G.forward(x, dense=dense)
        assert info.shape == (N, 1, 1, O)
        close(a, act_f(z, act))
        gin, dW, db = G.backward(ga, mask_input_grad=False)
        close(gin, d @ Wt.astype(np.float64))
        close(dW, d.T @ x.astype(np.float64))
        close(db, d.sum(0))
        outs.append((a, gin, dW, db))
        c = G.counters()
        assert c["fp"]["dense"] == N * F * O
        if not dense:
            assert c["fp"]["required"] == np.count_nonzero(x) * O
            assert c["wg"]["required"] == (np.count_nonzero(x, axis=1) * np.count_nonzero(act_df(z, act), axis=1)).sum()
        for ph in ("fp", "bp", "wg"):
            assert c[ph]["required"] <= c[ph]["executed"]
    for u, v in zip(*outs):
        close(u, v)


def test_conv_to_gemm_flatten():
    """A conv ReLU output feeds a gemm directly (NHWC flatten order)."""
    rng = np.random.default_rng(9)
    case = (3, 4, 5, 6, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    L, Wt, b = make_layer(case, 1, rng)
    x = sparse_input(rng, (3, 4, 5, 6), 0.5)
    a, info = L.forward(x)
    F = 4 * 5 * 7
    G = _native.GemmLayer(F, 11, act=1)
    Wg = (rng.standard_normal((11, F)) / np.sqrt(F)).astype(np.float32)
    G.set_weights(Wg, np.zeros(11, np.float32))
    y, yinfo = G.forward(info)
    af = a.reshape(3, F).astype(np.float64)
    close(y, np.maximum(af @ Wg.T, 0))
    assert info.flatten().shape == (3, 1, 1, F)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gin, dW, _ = G.backward(gy)
    dd = gy * (af @ Wg.T > 0)
    close(gin, (dd @ Wg) * (af > 0))  # masked by the conv's ReLU G
    close(dW, dd.T @ af)


# ----------------------------------------------------------------------------- other ops
def test_pools_bn_add_softmax():
    rng = np.random.default_rng(11)
    x = np.maximum(rng.standard_normal((2, 7, 9, 5)), 0).astype(np.float32)
    y, arg = _native.maxpool_forward(x, (2, 2), (2, 2))
    ref = x[:, :6, :8].reshape(2, 3, 2, 4, 2, 5).max(axis=(2, 4))
    close(y, ref)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = _native.maxpool_backward(gy, arg, x.shape)
    assert gx.shape == x.shape
    close(gx.sum(), gy.sum())
    y3, arg3 = _native.maxpool_forward(x, (3, 3), (2, 2), pads=(1, 1, 1, 1))
    assert y3.shape == (2, 4, 5, 5)
    ya = _native.avgpool_forward(x, (2, 2), (2, 2))
    close(ya, x[:, :6, :8].reshape(2, 3, 2, 4, 2, 5).mean(axis=(2, 4)))
    ga = _native.avgpool_backward(np.ones_like(ya), x.shape, (2, 2), (2, 2))
    close(ga[:, :6, :8], np.full((2, 6, 8, 5), 0.25))
    g = _native.global_avgpool_forward(x)
    close(g, x.mean(axis=(1, 2)))
    close(_native.global_avgpool_backward(np.ones((2, 5), np.float32), x.shape), np.full(x.shape, 1 / 63))
    gamma, beta = rng.random(5).astype(np.float32) + 0.5, rng.standard_normal(5).astype(np.float32)
    mean, var = rng.standard_normal(5).astype(np.float32), rng.random(5).astype(np.float32) + 0.1
    yb = _native.batchnorm_forward(x, gamma, beta, mean, var, 1e-5)
    inv = 1 / np.sqrt(var.astype(np.float64) + 1e-5)
    close(yb, (x - mean) * inv * gamma + beta)
    gyb = rng.standard_normal(x.shape).astype(np.float32)
    gxb, dg, dbt = _native.batchnorm_backward(gyb, x, gamma, mean, var, 1e-5)
    close(gxb, gyb * gamma * inv)
    close(dg, (gyb * (x - mean) * inv).sum(axis=(0, 1, 2)))
    close(dbt, gyb.sum(axis=(0, 1, 2)))
    close(_native.add(x, x), 2 * x.astype(np.float64))
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1])
    loss, grad = _native.softmax_cross_entropy(logits, labels)
    lz = logits.astype(np.float64)
    p = np.exp(lz - lz.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert abs(loss - (-np.log(p[np.arange(6), labels]).mean())) < 1e-5
    p[np.arange(6), labels] -= 1
    close(grad, p / 6)
    with pytest.raises(ValueError, match="label"):
        _native.softmax_cross_entropy(logits, np.array([0, 1, 2, 3, 4, 1]))


# ----------------------------------------------------------------------------- torch autograd
TORCH_ACTS = {1: "relu", 2: "relu6", 3: "hardswish", 4: "leaky", 5: "sigmoid", 0: "none"}


def _torch_act(torch, act):
    F = torch.nn.functional
    return {0: lambda t: t, 1: F.relu, 2: F.relu6, 3: F.hardswish,
            4: lambda t: F.leaky_relu(t, ALPHA), 5: torch.sigmoid}[act]


@pytest.mark.parametrize("act", list(TORCH_ACTS))
def test_activation_derivatives_match_torch(act):
    torch = need("torch")
    z = np.array([-7, -3.0001, -3, -2.9999, -1, -1e-7, 0, 1e-7, 0.5, 2.9999, 3, 3.0001, 5.9999, 6, 6.0001, 9],
                 np.float32).reshape(1, 1, 2, 8)
    a, info = _native.activate(z, act, alpha=ALPHA)
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    at = _torch_act(torch, act)(zt)
    ga = np.linspace(0.5, 2.0, z.size, dtype=np.float32).reshape(z.shape)
    at.backward(torch.from_numpy(ga))
    np.testing.assert_allclose(a, at.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(info.grad_z(ga), zt.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[3], CONV_CASES[4], CONV_CASES[6]])
@pytest.mark.parametrize("act", [1, 2, 3])
def test_two_layer_chain_vs_torch(case, act):
    torch = need("torch")
    F = torch.nn.functional
    N, H, W, C, K, (R, S), st, pads, dil, groups = case
    rng = np.random.default_rng(12 + act)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    L1, W1, b1 = make_layer(case, act, rng)
    case2 = (N, 0, 0, K, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    L2, W2, b2 = make_layer(case2, act, rng)
    a1, i1 = L1.forward(x)
    a2, i2 = L2.forward(i1)
    ga = rng.standard_normal(a2.shape).astype(np.float32)
    g1, dW2, db2 = L2.backward(ga)           # masked by layer 1's G
    gx, dW1, db1 = L1.backward(g1, mask_input_grad=False)

    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    tW1 = torch.from_numpy(W1).requires_grad_(True)
    tb1 = torch.from_numpy(b1).requires_grad_(True)
    tW2 = torch.from_numpy(W2).requires_grad_(True)
    tb2 = torch.from_numpy(b2).requires_grad_(True)
    f = _torch_act(torch, act)
    xp = F.pad(tx, (pads[1], pads[3], pads[0], pads[2]))
    t1 = f(F.conv2d(xp, tW1, tb1, stride=st, dilation=dil, groups=groups))
    t2 = f(F.conv2d(t1, tW2, tb2, padding=1))
    t2.backward(torch.from_numpy(ga.transpose(0, 3, 1, 2).copy()))
    close(a2, t2.detach().numpy().transpose(0, 2, 3, 1))
    close(gx, tx.grad.numpy().transpose(0, 2, 3, 1))
    close(dW1, tW1.grad.numpy())
    close(db1, tb1.grad.numpy())
    close(dW2, tW2.grad.numpy())
    close(db2, tb2.grad.numpy())


def test_depthwise_reads_a_given_dense_input_copy():
    """x_dense (the producer's a, as the engine passes it) gives the same FP/BP/WG as expanding the lists."""
    rng = np.random.default_rng(77)
    z = rng.standard_normal((2, 6, 5, 16)).astype(np.float32)
    a, info = _native.activate(z, "relu6")
    L = _native.ConvLayer(16, 16, kernel=(3, 3), pads=(1, 1, 1, 1), groups=16, act="relu6")
    L.set_weights(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), rng.standard_normal(16).astype(np.float32))
    ga = rng.standard_normal((2, 6, 5, 16)).astype(np.float32)
    outs = []
    for xd in (None, a.copy()):
        y, _ = L.forward(info, x_dense=xd)
        outs.append((y,) + L.backward(ga, prev_info=info))
    for u, v in zip(*outs):
        close(u, v)
    # the copy is what FP reads: a doubled copy gives the output of the doubled input
    y2, _ = L.forward(info, x_dense=2 * a)
    close(y2, L.forward(_native.analyze_input(2 * a))[0])
    with pytest.raises(ValueError, match="x_dense"):
        L.forward(info, x_dense=np.zeros(5, np.float32))
