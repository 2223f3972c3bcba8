"""Python model of the RTL device's arithmetic (hardware/rtl/train_core.v driven by the firmware in
hardware/firmware/): what each TRAIN_STEP, PREDICT and LOSS_GRADS computes, bit for bit.

The device trains a chain of Gemm layers (transB = 1), each followed by ReLU or by nothing, with
softmax cross-entropy and SGD (momentum, weight decay, constant rate). Every number goes through the
device's fp32 units (`pe_model.fmul/fadd/fdiv`: round to nearest even, subnormals flushed), in the
device's order:

* FP: a tile's accumulator starts at the bias and adds `a * W[:, c]` for the input's non-zero
  channels c in ascending order (the list the position-estimation unit wrote);
* loss: per sample, max, exp(z - max) by Cody-Waite reduction and a degree-7 polynomial, their sum,
  ln(sum) by the atanh series, `fdiv` for the softmax ratios and the batch mean (firmware through
  the scalar FPU);
* BP: for each output channel k in the sample's G list (ascending), `d[k] * W[k, :]`, only for input
  lanes in G of the input;
* WG: for each sample with a non-zero input a[p, c] (ascending p), `a * d[p, :]`, only for output
  lanes in G; the bias is the extra input row C whose value is 1 for every sample;
* update (fused with WG, per weight): `g += wd * w`, `buf = g + m * buf` (buf = g on the first
  step), `w += (-lr) * buf`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .pe_model import F32, fadd, fdiv, fmul

LOG2E = F32(1.4426950408889634)
LN2_HI = F32(0.693145751953125)          # 0x3F317200: k * LN2_HI is exact for |k| < 2^15
LN2_LO = F32(1.428606765330187e-06)
EXP_POLY = [F32(1.0 / 5040), F32(1.0 / 720), F32(1.0 / 120), F32(1.0 / 24), F32(1.0 / 6), F32(0.5),
            F32(1.0), F32(1.0)]
LN_POLY = [F32(1.0 / 11), F32(1.0 / 9), F32(1.0 / 7), F32(1.0 / 5), F32(1.0 / 3), F32(1.0)]
SQRT2 = F32(1.41421356)
EXP_MIN = F32(-104.0)                    # exp below this is under 2^-150: flushed to 0
ONE = F32(1.0)
# The array's multiplier (FP, BP, WG). hardware/precision.py swaps in a bf16-operand multiplier to
# measure what cheaper lanes would cost in accuracy; the device itself is fp32.
ARRAY_MUL = fmul


class PlanError(ValueError):
    """The model is not one this device trains (its text is the BAD_DESCRIPTOR message)."""


@dataclass
class Layer:
    """One Gemm (+ its activation). W has the ONNX shape (K, C) (transB = 1)."""

    name: str
    w: str
    b: Optional[str]
    c_in: int
    k_out: int
    act: str              # "relu" or "none"
    train_w: bool
    train_b: bool


@dataclass
class Optim:
    lr: float
    momentum: float
    weight_decay: float


def plan(desc: dict) -> Tuple[List[Layer], Optim, int]:
    """(layers, optimizer, input features) of a MODEL descriptor; PlanError names what does not fit.
    Mirrors the firmware's checks (hardware/firmware/model.c)."""
    nodes = desc.get("nodes", [])
    shapes = {p["name"]: tuple(p["shape"]) for p in desc.get("params", [])}
    trainable = set(desc.get("trainable", []))
    feats = int(np.prod([d for d in desc["input_shape"][1:]]))
    layers: List[Layer] = []
    cur = feats
    for n in nodes:
        op = n["op"]
        if op == "flatten":
            if layers:
                raise PlanError(f"{n['name']}: flatten is only supported before the first gemm")
        elif op == "gemm":
            at = n.get("attrs", {})
            if int(at.get("transB", 0)) != 1 or float(at.get("alpha", 1.0)) != 1.0 or float(at.get("beta", 1.0)) != 1.0:
                raise PlanError(f"{n['name']}: only gemm with transB=1, alpha=1, beta=1")
            w = n["params"]["W"]
            b = n["params"].get("B")
            k, c = shapes[w]
            if c != cur:
                raise PlanError(f"{n['name']}: input of {cur} features, weight of {c}")
            layers.append(Layer(n["name"], w, b, c, k, "none", w in trainable, b in trainable if b else False))
            cur = k
        elif op == "relu":
            if not layers or layers[-1].act != "none":
                raise PlanError(f"{n['name']}: relu must follow a gemm")
            layers[-1].act = "relu"
        else:
            raise PlanError(f"unsupported op {op} ({n['name']}); this device trains gemm/relu/flatten chains")
    if not layers:
        raise PlanError("no gemm layer")
    o = desc["optimizer"]
    if o.get("name") != "sgd":
        raise PlanError(f"optimizer {o.get('name')} is not supported (sgd only)")
    if o.get("schedule", "constant") != "constant":
        raise PlanError(f"schedule {o.get('schedule')} is not supported (constant only)")
    if desc.get("loss") != "cross_entropy":
        raise PlanError(f"loss {desc.get('loss')} is not supported (cross_entropy only)")
    wd = o.get("weight_decay")
    return layers, Optim(float(o["lr"]), float(o.get("momentum", 0.0)), 0.0 if wd is None else float(wd)), feats


# -- the firmware's scalar functions, vectorised over elements -----------------------------------
def exp_nonpos(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 as the firmware computes it (hardware/firmware/loss.c)."""
    x = np.asarray(x, F32)
    t = fmul(x, LOG2E)
    k = -np.floor(-t.astype(np.float64) + 0.5)
    k = np.where(x < EXP_MIN, 0.0, k)
    kf = k.astype(F32)
    r = fadd(x, fmul(kf, -LN2_HI))
    r = fadd(r, fmul(kf, -LN2_LO))
    p = np.full_like(x, EXP_POLY[0])
    for c in EXP_POLY[1:]:
        p = fadd(fmul(p, r), c)
    # scale by 2^k in the exponent field; below the smallest normal: 0 (FTZ)
    bits = p.view(np.uint32).astype(np.int64)
    e = ((bits >> 23) & 0xFF) + k.astype(np.int64)
    out = ((bits & 0x807FFFFF) | (np.clip(e, 0, 255) << 23)).astype(np.uint32).view(F32)
    return np.where((x < EXP_MIN) | (e <= 0), F32(0), out).astype(F32)


def ln_ge1(s: np.ndarray) -> np.ndarray:
    """ln(s) for s >= 1 (the softmax denominator), as hardware/firmware/loss.c computes it."""
    s = np.asarray(s, F32)
    bits = s.view(np.uint32).astype(np.int64)
    e = ((bits >> 23) & 0xFF) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).astype(np.uint32).view(F32)
    big = m > SQRT2
    m = np.where(big, ((bits & 0x7FFFFF) | 0x3F000000).astype(np.uint32).view(F32), m)
    e = e + big
    t = fdiv(fadd(m, F32(-1.0)), fadd(m, F32(1.0)))
    t2 = fmul(t, t)
    p = np.full_like(s, LN_POLY[0])
    for c in LN_POLY[1:]:
        p = fadd(fmul(p, t2), c)
    u = fmul(t, p)
    ef = e.astype(F32)
    return fadd(fmul(ef, LN2_HI), fadd(fmul(ef, LN2_LO), fadd(u, u)))


def softmax_xent(z: np.ndarray, y: np.ndarray):
    """(mean loss f32, correct, dL/dz) of logits z (N, K) and class labels y, in the device's order."""
    n, kk = z.shape
    m = z.max(axis=1, keepdims=True)
    x = fadd(z, -m)
    e = exp_nonpos(x)
    s = e[:, 0]
    for k in range(1, kk):
        s = fadd(s, e[:, k])
    lse = ln_ge1(s)
    rows = np.arange(n)
    per = fadd(lse, -x[rows, y])
    total = F32(0)
    for v in per:
        total = fadd(total, v)
    nf = F32(n)
    q = fdiv(e, s[:, None])
    q[rows, y] = fadd(q[rows, y], F32(-1.0))
    correct = int((z.argmax(axis=1) == y).sum())
    return F32(fdiv(total, nf)), correct, fdiv(q, nf)


# -- the array's phases ----------------------------------------------------------------------------
def fp_layer(a: np.ndarray, w: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    """z (N, K): bias first, then ascending non-zero input channels."""
    n, c = a.shape
    # the bias is loaded through the multiplier (fmul(1, b): b, a subnormal read as zero)
    b0 = fmul(ONE, b) if b is not None else np.zeros(w.shape[0], F32)
    acc = np.broadcast_to(b0, (n, w.shape[0])).astype(F32)
    for ch in range(c):
        nz = a[:, ch] != 0
        if nz.any():
            acc[nz] = fadd(acc[nz], ARRAY_MUL(a[nz, ch][:, None], w[None, :, ch]))
    return acc


def bp_layer(d: np.ndarray, g_out: np.ndarray, w: np.ndarray, g_in: np.ndarray) -> np.ndarray:
    """d_{l-1} (N, C): ascending k of the G list of each sample, lanes gated by G of the input."""
    n, k_out = d.shape
    acc = np.zeros((n, w.shape[1]), F32)
    for k in range(k_out):
        rows = g_out[:, k]
        if rows.any():
            upd = fadd(acc[rows], ARRAY_MUL(d[rows, k][:, None], w[k][None, :]))
            acc[rows] = np.where(g_in[rows], upd, acc[rows])
    return np.where(g_in, acc, F32(0)).astype(F32)


def wg_layer(a: np.ndarray, d: np.ndarray, g_out: np.ndarray) -> np.ndarray:
    """dW^T (C, K) of one layer: ascending samples with a non-zero input, lanes gated by G of the output."""
    n, c = a.shape
    acc = np.zeros((c, d.shape[1]), F32)
    for p in range(n):
        cols = a[p] != 0
        if cols.any():
            upd = fadd(acc[cols], ARRAY_MUL(a[p, cols][:, None], d[p][None, :]))
            acc[cols] = np.where(g_out[p][None, :], upd, acc[cols])
    return acc


def bias_grad(d: np.ndarray, g_out: np.ndarray) -> np.ndarray:
    """The bias row of WG: input value 1 for every sample."""
    acc = np.zeros(d.shape[1], F32)
    for p in range(d.shape[0]):
        acc = np.where(g_out[p], fadd(acc, ARRAY_MUL(ONE, d[p])), acc)
    return acc


class DeviceModel:
    """The device's resident state and its commands, in numpy."""

    def __init__(self, layers: List[Layer], opt: Optim, in_features: int):
        self.layers, self.opt, self.in_features = layers, opt, in_features
        self.params: Dict[str, np.ndarray] = {}
        self.buf: Dict[str, np.ndarray] = {}
        self.t = 0
        self.step = 0

    @classmethod
    def from_descriptor(cls, desc: dict) -> "DeviceModel":
        return cls(*plan(desc))

    def trainable(self) -> List[str]:
        out = []
        for lay in self.layers:
            out += [lay.w] if lay.train_w else []
            out += [lay.b] if lay.train_b else []
        return out

    def load_state(self, params: Dict[str, np.ndarray], opt: Optional[dict] = None, step: Optional[int] = None):
        self.params.update({k: np.array(v, F32) for k, v in params.items()})
        if opt is not None:
            self.t = int(opt.get("t", 0))
            self.buf = {k: np.array(v, F32) for k, v in (opt.get("buf") or {}).items()}
        if step is not None:
            self.step = int(step)

    def optimizer_state(self) -> dict:
        return {"t": self.t, "buf": {k: v.copy() for k, v in self.buf.items()}}

    # -- phases ---------------------------------------------------------------------------------
    def forward(self, x: np.ndarray):
        """[(a_in, z, g_out)] per layer; a_in of layer 0 is the flattened input."""
        a = np.asarray(x, F32).reshape(len(x), -1)
        out = []
        for lay in self.layers:
            b = self.params[lay.b] if lay.b else None
            z = fp_layer(a, self.params[lay.w], b)
            if lay.act == "relu":
                g = z > 0
                nxt = np.where(g, z, F32(0)).astype(F32)
            else:
                g = np.ones_like(z, bool)
                nxt = z
            out.append((a, z, g))
            a = nxt
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[-1][1]

    def _backward(self, x, y, update: bool):
        acts = self.forward(x)
        loss, correct, d = softmax_xent(acts[-1][1], np.asarray(y))
        grads: Dict[str, np.ndarray] = {}
        need_bp = [any(lay.train_w or lay.train_b for lay in self.layers[:i]) for i in range(len(self.layers))]
        if update:
            self.t += 1
        for i in range(len(self.layers) - 1, -1, -1):
            lay = self.layers[i]
            a_in, _z, g_out = acts[i]
            w = self.params[lay.w]
            d_prev = bp_layer(d, g_out, w, acts[i - 1][2]) if need_bp[i] else None
            if lay.train_w:
                grads[lay.w] = wg_layer(a_in, d, g_out).T.copy()
            if lay.train_b:
                grads[lay.b] = bias_grad(d, g_out)
            if update:
                for name in ([lay.w] if lay.train_w else []) + ([lay.b] if lay.train_b else []):
                    self._sgd(name, grads[name])
            d = d_prev
        return loss, correct, grads

    def _sgd(self, name: str, g: np.ndarray) -> None:
        o = self.opt
        p = self.params[name]
        if o.weight_decay:
            g = fadd(g, fmul(F32(o.weight_decay), p))
        if o.momentum:
            buf = self.buf.get(name)
            g = g.copy() if buf is None else fadd(g, fmul(F32(o.momentum), buf))
            self.buf[name] = g
        self.params[name] = fadd(fmul(ONE, p), fmul(-F32(o.lr), g))     # W is loaded through the multiplier

    def train_step(self, x, y):
        """(loss f32, correct) of one step; the state moves on."""
        loss, correct, _ = self._backward(x, y, update=True)
        self.step += 1
        return loss, correct

    def loss_and_grads(self, x, y):
        loss, _correct, grads = self._backward(x, y, update=False)
        return loss, grads


def required_macs(acts) -> Tuple[int, int, int]:
    """The constraint-required MACs (FP, BP, WG) of a step, from `DeviceModel.forward`'s masks: FP
    non-zero inputs x K; BP (layers after the first) |G out| x |G in| per sample; WG non-zero
    inputs x |G out| per sample (weights only: the bias row is not counted, as the engines count none)."""
    fp = bp = wg = 0
    for i, (a, _z, g) in enumerate(acts):
        nz = (a != 0).astype(np.int64)
        fp += int(nz.sum()) * g.shape[1]
        wg += int((nz.T @ g.astype(np.int64)).sum())
        if i > 0:
            bp += int((g.sum(1) * acts[i - 1][2].sum(1)).sum())
    return fp, bp, wg
