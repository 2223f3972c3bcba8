"""Python model of pe_core.v: its fp32 arithmetic, its memory images and its accumulation order.

`fmul` / `fadd` are the RTL's rounding bit for bit (round to nearest even on 24 bits,
results below 2^-126 flushed to signed zero, subnormal inputs read as zero). `Layer`
turns one layer's operands (NHWC activations, their 2-bit constraint states, weights,
errors) into what the core reads: per-pixel and per-channel non-zero lists, vector words,
lane states; `run` accumulates in the core's order and counts its issued entries and MACs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

F32 = np.float32
TINY = np.float64(2.0 ** -126)
ZERO, LINEAR, SATURATED = 0, 1, 2
MODES = {"fp": 0, "bp": 1, "wg": 2}


def _daz(x):
    x = np.asarray(x, F32)
    return np.where(np.abs(x) < F32(TINY), np.copysign(F32(0), x), x).astype(F32)


def fmul(a, b):
    """fp32_mul.v: the exact product, rounded to 24 bits with an unbounded exponent, then flushed."""
    p = _daz(a).astype(np.float64) * _daz(b).astype(np.float64)    # exact: 48-bit significands
    with np.errstate(over="ignore"):
        r = p.astype(F32)
    tiny = np.abs(p) < TINY
    up = np.abs(p) >= TINY - 2.0 ** -151                            # rounds up to the smallest normal
    r = np.where(tiny, np.where(up, np.copysign(F32(TINY), p), np.copysign(F32(0), p)), r)
    return r.astype(F32)


def fadd(a, b):
    """fp32_add.v: rounded to nearest even; an exact result below 2^-126 (always exact) is flushed."""
    with np.errstate(over="ignore"):
        r = (_daz(a).astype(np.float64) + _daz(b).astype(np.float64)).astype(F32)
    return np.where(np.abs(r) < F32(TINY), np.copysign(F32(0), r), r).astype(F32)


def fdiv(a, b):
    """fp32_div.v: a / b rounded to nearest even (IEEE single, which numpy's float32 division is);
    subnormal inputs read as zero, a quotient below 2^-126 flushed to a signed zero. No quotient
    the device computes (softmax ratios, divisions by the batch size) is that small and non-zero
    before rounding, so the edge where rounding would reach 2^-126 from below is not modelled."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        q = (_daz(a) / _daz(b)).astype(F32)
    return np.where(np.abs(q) < F32(TINY), np.copysign(F32(0), q), q).astype(F32)


def pack_words(lanes: np.ndarray) -> int:
    """One vector word: lane j in bits [32j+31:32j]."""
    return int.from_bytes(np.ascontiguousarray(lanes, F32).tobytes(), "little")


def unpack_words(value: int, lanes: int) -> np.ndarray:
    return np.frombuffer(value.to_bytes(4 * lanes, "little"), F32).copy()


def pack_states(states: np.ndarray) -> int:
    return sum(int(s) << (2 * j) for j, s in enumerate(states))


def f32_bits(v) -> int:
    return int(np.asarray(v, F32).view(np.uint32))


@dataclass
class Layer:
    """One layer's operands, NHWC. ks = 1 (gemm: H = W = 1) or 3 (conv, stride 1, pad 1)."""

    a: np.ndarray          # (N, H, W, C) input activation
    a_state: np.ndarray    # (N, H, W, C) its constraint states (G of the input = LINEAR)
    w: np.ndarray          # (ks, ks, C, K)
    d: np.ndarray          # (N, H, W, K) error dL/dz of the output, zero outside G
    z_state: np.ndarray    # (N, H, W, K) output states (G of the output = LINEAR)
    lanes: int = 64
    images: Dict[str, dict] = field(default_factory=dict)

    @property
    def ks(self):
        return self.w.shape[0]

    def dims(self):
        n, h, w, c = self.a.shape
        return n, h, w, c, self.w.shape[3]

    def tiles(self, count):
        return -(-count // self.lanes)

    def cfg(self, mode: str) -> dict:
        n, h, w, c, k = self.dims()
        return {"mode": MODES[mode], "n_img": n, "h": h, "w": w, "c_in": c, "k_out": k, "ks": self.ks,
                "ct": self.tiles(c), "kt": self.tiles(k)}

    # -- what each phase reads ----------------------------------------------------------------
    def _taps(self):
        pad = (self.ks - 1) // 2
        return [(r - pad, s - pad) for r in range(self.ks) for s in range(self.ks)]

    def memories(self, mode: str):
        """(ptr, lst, vec, gate) images: {address: int word}."""
        n, h, w, c, k = self.dims()
        L, ct, kt = self.lanes, self.tiles(c), self.tiles(k)
        ptr, lst, vec, gate = {}, [], {}, {}
        pix = [(i, y, x) for i in range(n) for y in range(h) for x in range(w)]
        if mode in ("fp", "bp"):
            src = self.a if mode == "fp" else self.d
            keep = (self.a != 0) if mode == "fp" else (self.z_state == LINEAR)
            for q, (i, y, x) in enumerate(pix):
                start = len(lst)
                for ch in np.flatnonzero(keep[i, y, x]):
                    lst.append((int(ch) << 32) | f32_bits(src[i, y, x, ch]))
                ptr[q] = (len(lst) << 16) | start
            for t, (dy, dx) in enumerate(self._taps()):
                wt = self.w[dy + self.ks // 2, dx + self.ks // 2]          # (C, K)
                if mode == "fp":
                    for ch in range(c):
                        for tt in range(kt):
                            vec[(t * c + ch) * kt + tt] = pack_words(_lanes(wt[ch], tt, L))
                else:
                    for kk in range(k):
                        for tt in range(ct):
                            vec[(t * k + kk) * ct + tt] = pack_words(_lanes(wt[:, kk], tt, L))
            if mode == "bp":
                for q, (i, y, x) in enumerate(pix):
                    for tt in range(ct):
                        gate[q * ct + tt] = pack_states(_lanes(self.a_state[i, y, x], tt, L, 0))
        else:
            for ch in range(c):
                start = len(lst)
                for i, y, x in pix:
                    if self.a[i, y, x, ch] != 0:
                        lst.append((((i << 12) | (y << 6) | x) << 32) | f32_bits(self.a[i, y, x, ch]))
                ptr[ch] = (len(lst) << 16) | start
            for p, (i, y, x) in enumerate(pix):
                for tt in range(kt):
                    vec[p * kt + tt] = pack_words(_lanes(self.d[i, y, x], tt, L))
                    gate[p * kt + tt] = pack_states(_lanes(self.z_state[i, y, x], tt, L, 0))
        return ptr, lst, vec, gate

    # -- the core's arithmetic, in its order ----------------------------------------------------
    def run(self, mode: str) -> Tuple[Dict[int, np.ndarray], dict]:
        """Expected output words {address: lanes} and counts {terms, macs, tiles}."""
        n, h, w, c, k = self.dims()
        L, ct, kt = self.lanes, self.tiles(c), self.tiles(k)
        taps = self._taps()
        out, terms, macs = {}, 0, 0
        pix = [(i, y, x) for i in range(n) for y in range(h) for x in range(w)]

        def accumulate(items, enable_of):
            nonlocal terms, macs
            acc = np.zeros(L, F32)
            for scalar, vector, en in items:
                en = enable_of(en)
                terms += 1
                macs += int(en.sum())
                acc = np.where(en, fadd(acc, fmul(F32(scalar), vector)), acc)
            return acc

        if mode == "fp":
            for p, (i, y, x) in enumerate(pix):
                for tt in range(kt):
                    bounds = _bounds(tt, L, k)
                    items = [(self.a[i, y + dy, x + dx, ch], _lanes(self.w[dy + self.ks // 2, dx + self.ks // 2, ch], tt, L),
                              bounds)
                             for dy, dx in taps if 0 <= y + dy < h and 0 <= x + dx < w
                             for ch in np.flatnonzero(self.a[i, y + dy, x + dx] != 0)]
                    out[p * kt + tt] = np.where(bounds, accumulate(items, lambda e: e), F32(0))
        elif mode == "bp":
            for q, (i, y, x) in enumerate(pix):
                for tt in range(ct):
                    g = (_lanes(self.a_state[i, y, x], tt, L, 0) == LINEAR) & _bounds(tt, L, c)
                    if not g.any():
                        out[q * ct + tt] = np.zeros(L, F32)
                        continue
                    items = [(self.d[i, y - dy, x - dx, kk], _lanes(self.w[dy + self.ks // 2, dx + self.ks // 2, :, kk], tt, L), g)
                             for dy, dx in taps if 0 <= y - dy < h and 0 <= x - dx < w
                             for kk in np.flatnonzero(self.z_state[i, y - dy, x - dx] == LINEAR)]
                    out[q * ct + tt] = np.where(g, accumulate(items, lambda e: e), F32(0))
        else:
            for t, (dy, dx) in enumerate(taps):
                for ch in range(c):
                    for tt in range(kt):
                        items = []
                        for i, y, x in pix:
                            if self.a[i, y, x, ch] == 0:
                                continue
                            oy, ox = y - dy, x - dx
                            ok = 0 <= oy < h and 0 <= ox < w
                            en = ((_lanes(self.z_state[i, oy, ox], tt, L, 0) == LINEAR) if ok
                                  else np.zeros(L, bool))
                            vecw = _lanes(self.d[i, oy, ox], tt, L) if ok else np.zeros(L, F32)
                            items.append((self.a[i, y, x, ch], vecw, en))
                        out[(t * c + ch) * kt + tt] = np.where(_bounds(tt, L, k), accumulate(items, lambda e: e),
                                                               F32(0))
        return out, {"terms": terms, "macs": macs, "tiles": len(out)}


def _lanes(v, tile, lanes, fill=0.0):
    seg = np.asarray(v)[tile * lanes:(tile + 1) * lanes]
    outv = np.full(lanes, fill, dtype=seg.dtype)
    outv[:len(seg)] = seg
    return outv


def _bounds(tile, lanes, count):
    return (tile * lanes + np.arange(lanes)) < count


def states_relu(a) -> np.ndarray:
    return np.where(a > 0, LINEAR, ZERO).astype(np.int8)


def states_relu6(z, hi=6.0) -> np.ndarray:
    return np.where(z <= 0, ZERO, np.where(z >= hi, SATURATED, LINEAR)).astype(np.int8)
