"""`edgetune bench`: the native sparse engine against the same kernels run densely, the numpy
reference and PyTorch, on the same model, batch and thread count. Medians over repeated
training steps (forward + error propagation + weight gradient), with the measured sparsity
printed beside every figure. Nothing here is a test: timings never decide pass/fail."""
from __future__ import annotations

import os
import platform
import time
from typing import Callable, Dict, List

import numpy as np

BENCH_MODELS = ("bench_vgg_relu", "bench_resnet_relu", "bench_mobilenet_relu6", "bench_cnn_hardswish",
                "bench_mobilenetv3_se")


def round_robin_ms(fns: Dict[str, Callable[[], object]], steps: int, block: int = 5) -> Dict[str, float]:
    """Median wall ms of each fn over `steps` timed calls, taken in turns of `block` calls
    so that a slow spell of the machine hits every engine alike and their ratios come
    from the same run.

    Each turn starts with two untimed calls: the engine's thread pool (OpenMP, torch, BLAS)
    wakes up and its working set comes back into cache, so what is timed is the steady
    state of training with that engine, as in a real run."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    while any(len(v) < steps for v in times.values()):
        for key, fn in fns.items():
            fn()
            fn()
            for _ in range(min(block, steps - len(times[key]))):
                t0 = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def geomean(v: List[float]) -> float:
    """Geometric mean."""
    return float(np.exp(np.mean(np.log(v))))


def cpu_name() -> str:
    """The CPU model string, for the JSON header."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _batch(model_name: str, model, batch_size: int, data):
    from edgetune import models
    from .data import load_data

    spec = data or (models.model_info(model_name).get("default_data") if models.is_bundled_model(model_name) else None)
    if spec is None:
        rng = np.random.default_rng(0)   # no data: a random batch (sparsity then reflects the weights only)
        shape = tuple(batch_size if d is None else d for d in model.input_shape)
        return rng.standard_normal(shape).astype(np.float32), None
    ds = load_data(spec, model.input_shape)
    reps = -(-batch_size // len(ds.x_val))
    return np.concatenate([ds.x_val] * reps)[:batch_size], np.concatenate([ds.y_val] * reps)[:batch_size]


def bench_model(name: str, batch_size: int, steps: int, threads: int, data=None, with_torch=True,
                memory: bool = True) -> dict:
    """Measure one model; returns the JSON row."""
    from .engines import make_engine
    from .onnx_import import load_model
    from .report import measure_layers
    from . import torch_peer

    model = load_model(name)
    x, y = _batch(name, model, batch_size, data)
    if y is None:
        y = np.zeros(len(x), np.int64)
    trainable = model.trainable_names()
    rows = measure_layers(model, model.params, trainable, x, y, "cross_entropy")
    dense_macs = sum(sum(r["macs_dense"].values()) for r in rows)
    req_macs = sum(sum(r["macs_required"].values()) for r in rows)
    act = [r for r in rows if r["activation"] in ("Relu", "Clip", "HardSwish")]
    elems = [r["act_elems"] for r in act] if act and "act_elems" in act[0] else None
    sparsity = float(np.average([r["act_sparsity"] for r in act], weights=elems)) if act else 0.0

    engines = {}
    for key, eng_name, kw in (("sparse", "native", {"threads": threads}),
                              ("dense_native", "native", {"threads": threads, "dense": True}),
                              ("numpy", "dense", {})):
        eng = make_engine(eng_name, **kw)
        eng.load(model, trainable)
        engines[key] = eng
    out = {"model": name, "batch_size": int(len(x)), "act_sparsity": sparsity,
           "ideal_speedup": dense_macs / max(req_macs, 1), "threads": threads}
    fns = {key: (lambda e=eng: e.loss_and_grads(x, y)) for key, eng in engines.items()}
    out["torch_ms"] = None
    if with_torch and torch_peer.available():
        peer = torch_peer.TorchPeer(model, model.params, threads=threads)
        fns["torch"] = lambda: peer.loss_and_grads(x, y, trainable)
    # numpy runs alone: OpenBLAS workers spin for ~0.1 s after each call and would slow
    # whichever engine came next
    numpy_fn = fns.pop("numpy")
    for key, ms in round_robin_ms(fns, steps).items():
        out[f"{key}_ms"] = ms
    out["numpy_ms"] = round_robin_ms({"numpy": numpy_fn}, steps)["numpy"]
    out["phase_ms"] = engines["sparse"].phase_medians(x, y, steps)
    step = engines["sparse"].measure_step(x, y)
    dense_step = engines["dense_native"].measure_step(x, y)
    out["activation_bytes"] = step["activation_bytes"]
    out["macs"] = {"dense": dense_macs, "required": req_macs, "executed": step["macs_executed"]["total"],
                   "executed_dense_switch": dense_step["macs_executed"]["total"]}
    # What (dense/sparse)/ideal would be if every MAC the sparse kernels execute cost what one
    # costs in the dense run: the kernels skip one operand per product (vector lanes), while
    # ideal counts products with both operands non-zero.
    out["skip_ceiling"] = (out["macs"]["executed_dense_switch"] / max(out["macs"]["executed"], 1)
                           / out["ideal_speedup"])
    # What skipping costs per executed MAC, against the same kernels run densely: 1.0 means a
    # MAC costs the sparse kernels what it costs the dense ones.
    out["mac_cost_ratio"] = ((out["dense_native_ms"] / out["sparse_ms"])
                             / (out["macs"]["executed_dense_switch"] / max(out["macs"]["executed"], 1)))
    out["dense_planned"] = engines["sparse"].dense_planned()
    for eng in engines.values():
        eng.close()
    if memory:
        out["peak_bytes"], out["process_peak_bytes"] = _step_memory(name, batch_size, threads, data,
                                                                    with_torch and out["torch_ms"] is not None)
    return out


def _step_memory(name, batch_size, threads, data, with_torch):
    """Step memory of each engine, each measured in a child process (runtime/bench_memory.py)."""
    from .bench_memory import step_memory

    step, peak = {}, {}
    for key in ("sparse", "dense_native") + (("torch",) if with_torch else ()):
        r = step_memory(name, key, batch_size, threads, data)
        step[key], peak[key] = r["step_bytes"], r["peak_bytes"]
    return step, peak


def simd() -> dict:
    """The kernels' instruction set and vector width in this process."""
    from edgetune import _native as nat

    return {"isa": nat.SIMD_ISA, "floats": int(nat.VECTOR_FLOATS), "level": nat.LEVEL}


def run_bench(models: List[str], batch_size: int, steps: int, threads: int, data=None, echo=print,
              memory: bool = True) -> dict:
    """Benchmark every model and print the table; returns {"results", "threads", "cpu", "simd"}."""
    results = []
    sd = simd()
    echo(f"edgetune bench: batch {batch_size}, {threads} threads, median of {steps} steps, {cpu_name()}, "
         f"kernels {sd['isa']} ({sd['floats']} floats per vector)")
    echo(f"{'model':<24}{'sparsity':>9}{'ideal':>7}{'sparse ms':>11}{'dense ms':>10}{'numpy ms':>10}"
         f"{'torch ms':>10}{'dense/sparse':>13}{'torch/sparse':>13}{'mac cost':>9}{'ceiling':>8}"
         f"{'act KiB stored/dense':>22}{'step MiB sparse/dense/torch':>29}")
    for name in models:
        r = bench_model(name, batch_size, steps, threads, data, memory=memory)
        results.append(r)
        torch_ms = r["torch_ms"]
        ab = r["activation_bytes"]
        pk = r.get("peak_bytes") or {}
        mem = "/".join(f"{pk[k] / 2**20:.1f}" if k in pk else "n/a" for k in ("sparse", "dense_native", "torch"))
        echo(f"{name:<24}{100 * r['act_sparsity']:>8.1f}%{r['ideal_speedup']:>6.2f}x{r['sparse_ms']:>11.2f}"
             f"{r['dense_native_ms']:>10.2f}{r['numpy_ms']:>10.1f}"
             f"{('%.2f' % torch_ms) if torch_ms else 'n/a':>10}{r['dense_native_ms'] / r['sparse_ms']:>12.2f}x"
             f"{('%.2fx' % (torch_ms / r['sparse_ms'])) if torch_ms else 'n/a':>13}"
             f"{r['mac_cost_ratio']:>9.2f}{r['skip_ceiling']:>8.2f}"
             f"{ab['stored'] / 1024:>13.0f}/{ab['dense'] / 1024:<8.0f}{mem:>29}")
    if results:
        eff = [(r["dense_native_ms"] / r["sparse_ms"]) / r["ideal_speedup"] for r in results]
        ceil = [r["skip_ceiling"] for r in results]
        echo(f"geomean (dense/sparse)/ideal = {geomean(eff):.2f}  "
             f"(ceiling of one-operand skipping at the dense run's cost per MAC: {geomean(ceil):.2f})")
        echo(f"geomean mac_cost_ratio = {geomean([r['mac_cost_ratio'] for r in results]):.2f}")
        tr = [r["torch_ms"] / r["sparse_ms"] for r in results if r["torch_ms"]]
        if tr:
            echo(f"geomean torch/sparse = {geomean(tr):.2f}")
    return {"results": results, "threads": threads, "cpu": cpu_name(), "simd": sd}


def default_threads() -> int:
    """All cores the process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
