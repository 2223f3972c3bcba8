"""Per-layer, per-phase speed of the native kernels on a model's real training step, next to torch.

For every Conv/Gemm layer of the model: FP, BP (input error, with the d prologue) and WG
(weight gradient) of the sparse kernels, of the same kernels run densely, and of torch's
convolution (forward, input grad, weight grad) on the same shapes. Times are CPU time of the
calling thread at one thread (`time.thread_time`, so other processes on a shared machine do
not count) or process CPU time at more threads, medians over --reps calls taken in turns.
GMAC/s are given on the dense MAC count (dense-equivalent) and, for the sparse run, on the MACs
the kernels executed.

    python native/bench_layers.py bench_resnet_relu [--threads 1] [--reps 15] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


def _clock(threads):
    return time.thread_time if threads == 1 else time.process_time


def _torch_fns(torch, lay, node, inp_shape, out_shape, threads):
    """torch's conv/linear forward, input grad and weight grad on this layer's shapes (NCHW)."""
    rng = np.random.default_rng(0)
    at = node.attrs
    if node.op == "conv":
        n, h, w, c = inp_shape
        x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32))
        k = out_shape[-1]
        g = at["group"]
        wt = torch.from_numpy(rng.standard_normal((k, c // g, *at["kernel"])).astype(np.float32))
        b = torch.zeros(k)
        pt, pl, pb, pr = at["pads"]
        go = torch.from_numpy(rng.standard_normal((out_shape[0], k, out_shape[1], out_shape[2])).astype(np.float32))
        cb = torch.ops.aten.convolution_backward
        args = ([k], list(at["stride"]), [pt, pl], list(at["dilation"]), False, [0, 0], g)
        return {"fp": lambda: torch.nn.functional.conv2d(x, wt, b, at["stride"], (pt, pl), at["dilation"], g),
                "bp": lambda: cb(go, x, wt, *args, [True, False, False]),
                "wg": lambda: cb(go, x, wt, *args, [False, True, True])}
    n, f = inp_shape[0], int(np.prod(inp_shape[1:]))
    k = out_shape[-1]
    x = torch.from_numpy(rng.standard_normal((n, f)).astype(np.float32))
    wt = torch.from_numpy(rng.standard_normal((k, f)).astype(np.float32))
    go = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32))
    return {"fp": lambda: torch.nn.functional.linear(x, wt), "bp": lambda: go @ wt,
            "wg": lambda: (go.t() @ x, go.sum(0))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data", default=None)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)

    from edgetune import _native as nat
    from edgetune.runtime.bench import _batch
    from edgetune.runtime.engines import make_engine
    from edgetune.runtime.onnx_import import load_model

    torch = None
    if not args.no_torch:
        try:
            import torch  # type: ignore
            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    model = load_model(args.model)
    x, y = _batch(args.model, model, args.batch, args.data)
    if y is None:
        y = np.zeros(len(x), np.int64)
    engines = {}
    for mode in ("sparse", "dense"):
        eng = make_engine("native", threads=args.threads, dense=mode == "dense")
        eng.load(model, model.trainable_names())
        for _ in range(2):
            eng.loss_and_grads(x, y)
        engines[mode] = eng
    clock = _clock(args.threads)
    rng = np.random.default_rng(1)
    print(f"{args.model}: batch {len(x)}, {args.threads} thread(s), kernels {nat.SIMD_ISA} "
          f"({nat.VECTOR_FLOATS} floats), CPU-time medians of {args.reps}; GMAC/s on dense MACs "
          f"(sparse: also on executed MACs)")
    head = (f"{'layer':<26}{'ph':>3}{'in 0s':>7}{'dense MMAC':>11}{'sparse ms':>10}{'dense ms':>9}"
            f"{'torch ms':>9}{'sp GMAC/s':>10}{'exec':>7}{'dn GMAC/s':>10}{'th GMAC/s':>10}")
    print(head)
    print("-" * len(head))
    tot = {k: 0.0 for k in ("sparse", "dense", "torch")}
    for name in engines["sparse"].layers:
        fns, cnt, sp_in = {}, None, 0.0
        for mode, eng in engines.items():
            lay = eng.layers[name]
            inp = lay.k.input_info
            if inp is None:
                continue
            out = lay.k.output_info
            ga = rng.standard_normal(out.size).astype(np.float32)
            dn = mode == "dense"
            fns[(mode, "fp")] = lambda k=lay.k, i=inp, dn=dn: k.forward(i, dense=dn, want_a=False)
            fns[(mode, "bp")] = lambda k=lay.k, g=ga: k.backward(g, True, None, True, False)
            fns[(mode, "wg")] = lambda k=lay.k, g=ga: k.backward(g, False, None, False, True)
            if mode == "sparse":
                sp_in = inp.sparsity
                lay.k.reset_counters()
                lay.k.forward(inp, dense=False, want_a=False)
                lay.k.backward(ga, True, None, True, True)
                cnt = lay.k.counters()
            shape_in, shape_out = inp.shape, out.shape
        if cnt is None:
            continue
        node = engines["sparse"].layers[name].node
        if torch is not None:
            so = shape_out if node.op == "conv" else (shape_out[0], shape_out[3])
            for ph, f in _torch_fns(torch, None, node, shape_in, so, args.threads).items():
                fns[("torch", ph)] = f
        times = {k: [] for k in fns}
        ctx = torch.no_grad() if torch is not None else None
        for rep in range(args.reps + 2):
            # FP of a mode must precede its BP/WG (they read what it kept): phases in order per mode
            for k, f in fns.items():
                t0 = clock()
                f()
                if rep >= 2:
                    times[k].append(clock() - t0)
        del ctx
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        for ph in ("fp", "bp", "wg"):
            d = cnt[ph]["dense"]
            if d == 0:
                continue
            s, de = med[("sparse", ph)], med[("dense", ph)]
            th = med.get(("torch", ph))
            tot["sparse"] += s
            tot["dense"] += de
            tot["torch"] += th or 0.0
            g = lambda ms, n=d: n / (ms * 1e6) if ms else float("nan")  # noqa: E731
            print(f"{name[:26]:<26}{ph:>3}{100 * sp_in:>6.1f}%{d / 1e6:>11.1f}{s:>10.2f}{de:>9.2f}"
                  f"{(f'{th:.2f}' if th else '-'):>9}{g(s):>10.1f}{cnt[ph]['executed'] / (s * 1e6):>7.1f}"
                  f"{g(de):>10.1f}{(f'{g(th):.1f}' if th else '-'):>10}")
    print(f"{'total':<26}{'':>3}{'':>7}{'':>11}{tot['sparse']:>10.2f}{tot['dense']:>9.2f}{tot['torch']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
