"""Where train_core.v keeps a model's tensors and what the control processor writes into its
registers for each phase. hardware/firmware/layout.c computes the same numbers in C; the RTL
tests drive the core with these (test_train_core.py), the firmware with its own.

Activation region a = 0 is the network input, a = l + 1 the output of Gemm layer l. Every region
has its per-sample lists (PMEM pointers, LMEM entries), per-channel lists (GMEM, counts), lane
states (SMEM) and error/logit words (DMEM), sized for `nmax` samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

REG = {"cmd": 0x00, "n": 0x01, "c": 0x02, "k": 0x03, "ct": 0x04, "kt": 0x05, "nmax": 0x06, "flags": 0x07,
       "act": 0x08, "p_in": 0x09, "g_in": 0x0A, "cnt_in": 0x0B, "p_g": 0x0C, "wf": 0x0D, "wb": 0x0E, "mf": 0x0F,
       "gr": 0x10, "d_in": 0x11, "d_out": 0x12, "s_in": 0x13, "s_out": 0x14, "p_out": 0x15, "l_out": 0x16,
       "g_out": 0x17, "cnt_out": 0x18, "se_out": 0x19, "z_out": 0x1A, "lr_neg": 0x1C, "mom": 0x1D, "wd": 0x1E,
       "push": 0x20}
COUNTERS = {"cyc_fp": 0x30, "cyc_bp": 0x31, "cyc_wg": 0x32, "cyc_up": 0x33, "mac_fp": 0x34, "mac_bp": 0x35,
            "mac_wg": 0x36, "ent_fp": 0x37, "ent_bp": 0x38, "ent_wg": 0x39, "est_tiles": 0x3A,
            "est_entries": 0x3B}
FP, BP, WG = 0, 1, 2
ACT = {"relu": 0, "none": 1, "nonzero": 2}
F_BIAS, F_TRAIN_W, F_TRAIN_B, F_WB, F_GRAD, F_WD, F_MOM, F_WBUF, F_BBUF = range(9)
Z_EN = 1 << 4


def tiles(n: int, lanes: int) -> int:
    return -(-n // lanes)


@dataclass
class Layout:
    lanes: int
    nmax: int
    dims: List[Tuple[int, int]]          # (C, K) per layer
    p: List[int]                         # per activation region
    lst: List[int]
    g: List[int]
    cnt: List[int]
    sd: List[int]                        # SMEM and DMEM base (same addressing)
    wf: List[int]
    mf: List[int]
    wb: List[int]
    gr: int
    sizes: Dict[str, int]                # words/entries used per memory


def layout(dims: Sequence[Tuple[int, int]], lanes: int, nmax: int) -> Layout:
    feats = [dims[0][0]] + [k for _c, k in dims]
    p, lst, g, cnt, sd = [], [], [], [], []
    lp = gp = cp = sp = 0
    for a, f in enumerate(feats):
        p.append(a * nmax)
        lst.append(lp)
        g.append(gp)
        cnt.append(cp)
        sd.append(sp)
        lp += nmax * f
        gp += tiles(f, lanes) * nmax
        cp += tiles(f, lanes)
        sp += nmax * tiles(f, lanes)
    wf, mf, wb = [], [], []
    w = 0
    for c, k in dims:
        wf.append(w)
        w += (c + 1) * tiles(k, lanes)
    for c, k in dims:
        mf.append(w)
        w += (c + 1) * tiles(k, lanes)
    for c, k in dims:
        wb.append(w)
        w += k * tiles(c, lanes)
    gr = w
    w += max((c + 1) * tiles(k, lanes) for c, k in dims)
    return Layout(lanes, nmax, list(dims), p, lst, g, cnt, sd, wf, mf, wb, gr,
                  {"wmem": w, "dmem": sp, "lmem": lp, "pmem": len(feats) * nmax, "gmem": gp, "cnt": cp})


def input_regs(lo: Layout, n: int) -> Dict[str, int]:
    """Registers for pushing the network input through the estimator (act "nonzero")."""
    c0 = lo.dims[0][0]
    return {"n": n, "k": c0, "kt": tiles(c0, lo.lanes), "nmax": lo.nmax, "act": ACT["nonzero"],
            "p_out": lo.p[0], "l_out": lo.lst[0], "g_out": lo.g[0], "cnt_out": lo.cnt[0], "se_out": lo.sd[0],
            "z_out": 0}


def fp_regs(lo: Layout, layer: int, n: int, act: str, has_bias: bool, last: bool) -> Dict[str, int]:
    c, k = lo.dims[layer]
    a = layer + 1
    return {"n": n, "c": c, "k": k, "ct": tiles(c, lo.lanes), "kt": tiles(k, lo.lanes), "nmax": lo.nmax,
            "flags": int(has_bias) << F_BIAS, "act": ACT[act] | (Z_EN if last else 0), "p_in": lo.p[layer],
            "wf": lo.wf[layer], "p_out": lo.p[a], "l_out": lo.lst[a], "g_out": lo.g[a], "cnt_out": lo.cnt[a],
            "se_out": lo.sd[a], "z_out": lo.sd[a]}


def bp_regs(lo: Layout, layer: int, n: int) -> Dict[str, int]:
    c, k = lo.dims[layer]
    return {"n": n, "c": c, "k": k, "ct": tiles(c, lo.lanes), "kt": tiles(k, lo.lanes), "p_g": lo.p[layer + 1],
            "wb": lo.wb[layer], "d_in": lo.sd[layer + 1], "d_out": lo.sd[layer], "s_in": lo.sd[layer]}


def wg_regs(lo: Layout, layer: int, n: int, *, has_bias: bool, train_w: bool, train_b: bool, wb_copy: bool,
            grad: bool, wd: bool, mom: bool, wbuf: bool, bbuf: bool) -> Dict[str, int]:
    c, k = lo.dims[layer]
    flags = sum(int(v) << f for f, v in ((F_BIAS, has_bias), (F_TRAIN_W, train_w), (F_TRAIN_B, train_b),
                                          (F_WB, wb_copy), (F_GRAD, grad), (F_WD, wd), (F_MOM, mom),
                                          (F_WBUF, wbuf), (F_BBUF, bbuf)))
    return {"n": n, "c": c, "k": k, "ct": tiles(c, lo.lanes), "kt": tiles(k, lo.lanes), "nmax": lo.nmax,
            "flags": flags, "g_in": lo.g[layer], "cnt_in": lo.cnt[layer], "d_in": lo.sd[layer + 1],
            "s_out": lo.sd[layer + 1], "wf": lo.wf[layer], "mf": lo.mf[layer], "wb": lo.wb[layer], "gr": lo.gr}
