"""The accelerator's dataflow: work items of one layer and phase, and how rows run them.

Each PE row takes one work item (FP: an output pixel / sample; BP: an input pixel / sample;
WG: a weight row (tap, input channel)); the row's ``pe_cols`` lanes share one broadcast operand
(FP: input activation, BP: error, WG: input activation) and each lane owns one output of the
item. A row spends ``broadcasts x ceil(lanes / pe_cols)`` cycles on an item; grouped convs pack
``pe_cols // lanes`` groups side by side (docs/SIMULATION.md).
"""
from __future__ import annotations

import heapq
from typing import Dict

import numpy as np

from ..layer_stats import valid_taps


def _chunk_max_sum(cost, packs, axis):
    """cost[..., g, ...] along `axis` (groups): groups packed `packs` at a time run side by side,
    so a pack takes as long as its slowest group; returns the per-pack costs (groups axis -> packs)."""
    g = cost.shape[axis]
    if packs <= 1:
        return cost
    nchunk = -(-g // packs)
    pad = nchunk * packs - g
    if pad:
        widths = [(0, 0)] * cost.ndim
        widths[axis] = (0, pad)
        cost = np.pad(cost, widths)
    shape = cost.shape[:axis] + (nchunk, packs) + cost.shape[axis + 1:]
    return cost.reshape(shape).max(axis=axis + 1)


def _packing(lanes_per_group: int, groups: int, cols: int):
    """(groups packed side by side, lanes available to each packed group)."""
    packs = max(1, min(groups, cols // max(lanes_per_group, 1)))
    return packs, cols // packs


def work_items(node, wshape, a_in, g_in, g_out, cols: int) -> Dict[str, dict]:
    """Per phase: row cycles of every work item, MACs and broadcast-operand reads.

    a_in: which input activations are non-zero (skipped when False);
    g_out: which errors d_l are non-zero / computed (broadcast in BP, lanes in WG);
    g_in: which BP outputs g_{l-1} are computed (all True = no output sparsity).
    """
    if node.op == "gemm":
        a, go, gi = a_in.astype(np.int64), g_out.astype(np.int64), g_in.astype(np.int64)
        fout = go.shape[1]
        na, ng, ngi = a.sum(1), go.sum(1), gi.sum(1)
        ceil = lambda v: -(-v // cols)   # noqa: E731
        return {
            "fp": {"cyc": na * ceil(fout), "macs": int(na.sum()) * fout, "bcast": int(na.sum())},
            "bp": {"cyc": ng * ceil(ngi), "macs": int((ng * ngi).sum()), "bcast": int(ng.sum())},
            "wg": {"cyc": (a * ceil(ng)[:, None]).sum(0), "macs": int((na * ng).sum()), "bcast": int(na.sum())},
        }
    k, cg, R, S = wshape
    g = node.attrs["group"]
    kg = k // g
    n, c, h, w = a_in.shape
    oh, ow = g_out.shape[2:]
    (sh, sw), (dh, dw), (pt, pl, _, _) = node.attrs["stride"], node.attrs["dilation"], node.attrs["pads"]
    A5 = a_in.reshape(n, g, cg, h, w)
    A = A5.sum(2, dtype=np.int64)
    Gi = g_in.reshape(n, g, cg, h, w).sum(2, dtype=np.int64)
    Go = g_out.reshape(n, g, kg, oh, ow).sum(2, dtype=np.int64)
    fp_b = np.zeros((n, g, oh, ow), np.int64)      # non-zero inputs in each output's receptive field
    bp_b = np.zeros((n, g, h, w), np.int64)        # non-zero errors reaching each input pixel
    fp_p, pf = _packing(kg, g, cols)
    bp_p, pb = _packing(cg, g, cols)
    go_cyc = -(-Go // pf)                           # WG: cycles per (pixel, group) for the error list
    wg_cyc = np.zeros((R, S, g, cg), np.int64)
    wg_macs = wg_bcast = 0
    for r in range(R):
        oh_ok, ih = valid_taps(oh, h, sh, dh, pt, r)
        for s in range(S):
            ow_ok, iw = valid_taps(ow, w, sw, dw, pl, s)
            if not len(oh_ok) or not len(ow_ok):
                continue
            oi, ii = np.ix_(oh_ok, ow_ok), np.ix_(ih, iw)
            fp_b[:, :, oi[0], oi[1]] += A[:, :, ii[0], ii[1]]
            bp_b[:, :, ii[0], ii[1]] += Go[:, :, oi[0], oi[1]]
            a_sel = A5[:, :, :, ii[0], ii[1]].astype(np.int64)
            wg_cyc[r, s] = np.einsum("ngchw,nghw->gc", a_sel, go_cyc[:, :, oi[0], oi[1]])
            wg_macs += int(np.einsum("ngchw,nghw->", a_sel, Go[:, :, oi[0], oi[1]]))
            wg_bcast += int(a_sel.sum())
    fp_cost = fp_b * -(-kg // pf)
    bp_cost = bp_b * -(-Gi // pb)
    fp_cyc = _chunk_max_sum(fp_cost, fp_p, 1).sum(1).ravel()
    bp_cyc = _chunk_max_sum(bp_cost, bp_p, 1).sum(1).ravel()
    wg_items = _chunk_max_sum(wg_cyc, fp_p, 2).ravel()
    return {
        "fp": {"cyc": fp_cyc, "macs": int(fp_b.sum()) * kg, "bcast": int(fp_b.sum())},
        "bp": {"cyc": bp_cyc, "macs": int((bp_b * Gi).sum()), "bcast": int(bp_b.sum())},
        "wg": {"cyc": wg_items, "macs": wg_macs, "bcast": wg_bcast},
    }


def static_waves(cyc: np.ndarray, rows: int) -> int:
    """Items go to rows in their natural order, `rows` at a time; a wave lasts as long as its busiest row."""
    if cyc.size == 0:
        return 0
    pad = (-cyc.size) % rows
    c = np.concatenate([cyc, np.zeros(pad, cyc.dtype)]) if pad else cyc
    return int(c.reshape(-1, rows).max(1).sum())


def planned(cyc: np.ndarray, rows: int) -> int:
    """Work partition built from counts known in advance (longest-processing-time-first: items
    sorted by cost, each given to the least loaded row); each row runs its own queue and the
    phase lasts as long as the busiest row (Graham: at most 4/3 of optimal)."""
    if cyc.size == 0:
        return 0
    loads = [0] * rows
    for c in np.sort(cyc)[::-1].tolist():
        if c == 0:
            break
        heapq.heapreplace(loads, loads[0] + c)
    return int(max(loads))
