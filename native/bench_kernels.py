"""Benchmark of the edgetune sparse kernels on the layer of the kernel notes (docs/ARCHITECTURE.md, "The kernels").

3x3 conv 64->64, 16x16, batch 32, NHWC, ReLU, 2 threads by default. For each
target sparsity the input activation, this layer's output (G) and therefore
d are produced by real ReLUs with a bias chosen to hit the target; the measured
sparsities are printed beside every figure. FP, BP and WG are timed separately
(BP = backward with need_weight_grad=False, WG = need_input_grad=False; both
include the d = grad_a * f'(z) prologue). Medians over --reps runs.

    python native/bench_kernels.py [--threads 2] [--reps 30] [--sparsity 0 0.5 0.7 0.9]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# numpy's own BLAS threads would otherwise spin on the cores the kernels use
for _v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


def load_native(path):
    if path:
        sys.path.insert(0, path)
        import _native  # type: ignore
        return _native
    from edgetune import _native
    return _native


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hw", type=int, default=16)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    ap.add_argument("--module-path", default=os.environ.get("EDGETUNE_NATIVE_PATH"),
                    help="directory holding a freshly built _native (default: edgetune._native)")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)

    nt = load_native(args.module_path)
    nt.set_num_threads(args.threads)
    torch = None
    if not args.no_torch:
        try:
            import torch  # type: ignore
            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None

    N, H, C = args.batch, args.hw, args.channels
    K = C
    rng = np.random.default_rng(0)
    Wt = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    print(f"layer: conv3x3 {C}->{K}, {H}x{H}, batch {N}, NHWC, ReLU, threads={args.threads} "
          f"(openmp={nt.has_openmp()}), medians of {args.reps}")
    hdr = (f"{'target':>6} {'s_in':>5} {'s_out':>5} | {'phase':5} | {'sparse ms':>9} {'dense ms':>9} {'torch ms':>9} |"
           f" {'speedup':>7} {'ideal':>6} {'frac':>5} | {'exec/dense':>10} {'eff':>5}")
    print(hdr)
    print("-" * len(hdr))
    for s in args.sparsity:
        # input: a real ReLU output with ~s zeros
        zin = rng.standard_normal((N, H, H, C)).astype(np.float32)
        zin -= np.quantile(zin, s) if s > 0 else zin.min() - 1.0
        x, xinfo = nt.activate(zin, "relu")
        xinfo_d = xinfo.with_mode(True)
        # bias so that this layer's ReLU output has ~s zeros per channel
        probe = nt.ConvLayer(C, K, kernel=(3, 3), pads=(1, 1, 1, 1), act="none")
        probe.set_weights(Wt, np.zeros(K, np.float32))
        z0, _ = probe.forward(xinfo_d, dense=True)
        if s > 0:
            b = -np.quantile(z0.reshape(-1, K), s, axis=0).astype(np.float32)
        else:
            b = (-z0.reshape(-1, K).min(axis=0) + 1.0).astype(np.float32)
        L = nt.ConvLayer(C, K, kernel=(3, 3), pads=(1, 1, 1, 1), act="relu")
        L.set_weights(Wt, b)
        ga = rng.standard_normal((N, H, H, K)).astype(np.float32)

        # two layers with the same weights (one per mode) so that the three
        # implementations can be timed round-robin and share the machine's noise
        Ls = {"sparse": L, "dense": nt.ConvLayer(C, K, kernel=(3, 3), pads=(1, 1, 1, 1), act="relu")}
        Ls["dense"].set_weights(Wt, b)
        infos = {"sparse": xinfo, "dense": xinfo_d}
        fns = {}
        for mode in ("sparse", "dense"):
            lay, inf, dn = Ls[mode], infos[mode], mode == "dense"
            fns[(mode, "fp")] = (lambda lay=lay, inf=inf, dn=dn: lay.forward(inf, dense=dn, want_a=False))
            fns[(mode, "bp")] = (lambda lay=lay: lay.backward(ga, need_input_grad=True, need_weight_grad=False))
            fns[(mode, "wg")] = (lambda lay=lay: lay.backward(ga, need_input_grad=False, need_weight_grad=True))
        tt = {}
        if torch is not None:
            xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=torch.channels_last)
            wt = torch.from_numpy(Wt).contiguous(memory_format=torch.channels_last)
            bt = torch.from_numpy(b)
            gt = torch.from_numpy(np.ascontiguousarray(ga.transpose(0, 3, 1, 2))).contiguous(memory_format=torch.channels_last)
            conv = torch.nn.functional.conv2d
            cb = torch.ops.aten.convolution_backward
            fns[("torch", "fp")] = lambda: conv(xt, wt, bt, 1, 1)
            fns[("torch", "bp")] = lambda: cb(gt, xt, wt, [K], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                              [True, False, False])
            fns[("torch", "wg")] = lambda: cb(gt, xt, wt, [K], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                              [False, True, True])
        res = {"sparse": {}, "dense": {}}
        for mode in ("sparse", "dense"):
            _, oinfo = Ls[mode].forward(infos[mode], dense=mode == "dense", want_a=False)
            res[mode]["s_out"] = oinfo.sparsity
        times = {k: [] for k in fns}
        ctx = torch.no_grad() if torch is not None else None
        if ctx is not None:
            ctx.__enter__()
        for rep in range(args.reps + 3):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                if rep >= 3:
                    times[k].append(time.perf_counter() - t0)
        if ctx is not None:
            ctx.__exit__(None, None, None)
        for (mode, ph), ts in times.items():
            med = statistics.median(ts) * 1e3
            if mode == "torch":
                tt[ph] = med
            else:
                res[mode][ph] = med
        L.forward(xinfo, dense=False, want_a=False)
        L.backward(ga)
        res["sparse"]["counters"] = L.counters()
        c = res["sparse"]["counters"]
        for ph in ("fp", "bp", "wg"):
            sp, de = res["sparse"][ph], res["dense"][ph]
            ideal = c[ph]["dense"] / max(1, c[ph]["required"])
            spd = de / sp
            ex = c[ph]["executed"] / c[ph]["dense"]
            tstr = f"{tt[ph]:9.2f}" if ph in tt else f"{'-':>9}"
            print(f"{s:6.2f} {xinfo.sparsity:5.2f} {res['sparse']['s_out']:5.2f} | {ph:5} | {sp:9.2f} {de:9.2f} {tstr} |"
                  f" {spd:6.2f}x {ideal:5.2f}x {spd / ideal:5.2f} | {ex:10.3f} {spd * ex:5.2f}")
    print("speedup = dense-switch ms / sparse ms; ideal = dense MACs / required MACs (pair level); frac = speedup / ideal;\n"
          "exec/dense = executed / dense MACs of the sparse run; eff = speedup * exec/dense (1.0: the skipped MACs\n"
          "are saved in full). All timings are medians of round-robin runs (sparse, dense switch, torch).")


if __name__ == "__main__":
    main()
