"""`edgetune bench`: the native sparse engine against the same kernels run densely, the numpy
reference and PyTorch, on the same model, batch and thread count. Medians over repeated
training steps (forward + error propagation + weight gradient), with the measured sparsity
printed beside every figure. Nothing here is a test: timings never decide pass/fail."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, Dict, List

import numpy as np

BENCH_MODELS = ("bench_vgg_relu", "bench_resnet_relu", "bench_mobilenet_relu6", "bench_cnn_hardswish",
                "bench_mobilenetv3_se")


def round_robin(fns: Dict[str, Callable[[], object]], steps: int, block: int = 5) -> Dict[str, Dict[str, float]]:
    """Median wall ms and median CPU ms of each fn over `steps` timed calls, taken in turns of
    `block` calls so that a slow spell of the machine hits every engine alike and their ratios
    come from the same run. CPU ms is the process's CPU time (every thread of it) during the
    call: on a shared machine it does not count the time other processes took.

    Each turn starts with two untimed calls: the engine's thread pool (the kernels', torch's,
    BLAS) wakes up and its working set comes back into cache, so what is timed is the steady
    state of training with that engine, as in a real run."""
    wall: Dict[str, List[float]] = {k: [] for k in fns}
    cpu: Dict[str, List[float]] = {k: [] for k in fns}
    while any(len(v) < steps for v in wall.values()):
        for key, fn in fns.items():
            fn()
            fn()
            for _ in range(min(block, steps - len(wall[key]))):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                wall[key].append((time.perf_counter() - t0) * 1e3)
                cpu[key].append((time.process_time() - c0) * 1e3)
    return {k: {"wall_ms": float(np.median(wall[k])), "cpu_ms": float(np.median(cpu[k]))} for k in fns}


def round_robin_ms(fns: Dict[str, Callable[[], object]], steps: int, block: int = 5) -> Dict[str, float]:
    """Median wall ms of each fn (see round_robin)."""
    return {k: v["wall_ms"] for k, v in round_robin(fns, steps, block).items()}


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
                memory: bool = True, background: int = 0) -> dict:
    """Measure one model; returns the JSON row. With background > 0 it also times the sparse
    kernels and torch at one thread on the quiet machine, and every engine at `threads` beside
    that many busy processes (see background_load)."""
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
    out["cpu_ms"] = {}
    for key, r in round_robin(fns, steps).items():
        out[f"{key}_ms"] = r["wall_ms"]
        out["cpu_ms"][key] = r["cpu_ms"]
    r = round_robin({"numpy": numpy_fn}, steps)["numpy"]
    out["numpy_ms"], out["cpu_ms"]["numpy"] = r["wall_ms"], r["cpu_ms"]
    if background:
        out["background"] = _loaded(fns, steps, threads, background, peer if "torch" in fns else None)
    out["phase_ms"] = engines["sparse"].phase_medians(x, y, steps)
    step = engines["sparse"].measure_step(x, y)
    dense_step = engines["dense_native"].measure_step(x, y)
    out["activation_bytes"] = step["activation_bytes"]
    out["layers"] = [_layer_row(r) for r in step["layers"]]
    out["zero_structure"] = _zero_totals(engines["sparse"])
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


def _layer_row(r: dict) -> dict:
    """A layer of the bench JSON: its kernels, CPU ms and MACs per phase, its output's zero structure."""
    row = {"name": r["name"], "kernels": r.get("kernels"), "cpu_ms": r.get("cpu_ms"),
           "macs": {ph: r[ph] for ph in ("fp", "bp", "wg")}}
    if "zero" in r:
        row["zero"] = r["zero"]
    return row


def _zero_totals(engine) -> dict:
    """Zero structure over the model's constrained layer outputs (their elements, pixels and
    blocks pooled): element sparsity, the share of all-zero pixels and of all-zero channel blocks."""
    tot = {"elements": 0, "zeros": 0, "pixels": 0, "zero_pixels": 0, "blocks": 0, "zero_blocks": 0}
    block = None
    for lay in engine.layers.values():
        info = lay.k.output_info
        if info is None or not info.constrained:
            continue
        z = info.zero_structure()
        if not z["measured"]:
            continue
        block = int(z["block_channels"])
        tot["elements"] += int(info.size)
        tot["zeros"] += int(info.size) - int(info.nnz)
        tot["pixels"] += int(z["pixels"])
        tot["zero_pixels"] += int(z["zero_pixels_a"])
        tot["blocks"] += int(z["blocks"])
        tot["zero_blocks"] += int(z["zero_blocks_a"])
    share = lambda a, b: tot[a] / tot[b] if tot[b] else 0.0  # noqa: E731
    return {"block_channels": block, "sparsity": share("zeros", "elements"),
            "zero_pixels": share("zero_pixels", "pixels"), "zero_blocks": share("zero_blocks", "blocks")}


# at most this many busy processes per CPU the process may use (--background)
MAX_BACKGROUND_PER_CPU = 4
_BUSY = ("import os\n"
         "parent = os.getppid()\n"
         "while os.getppid() == parent:\n"   # exits by itself once the bench is gone
         "    for _ in range(100000):\n"
         "        pass\n")


@contextmanager
def background_load(n: int):
    """n busy processes (one pure-Python spin loop each, a stand-in for the other work an edge
    device runs) for the duration of the block; they are killed at its end and exit by
    themselves should the bench die first."""
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _BUSY], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.2)   # running before the first timed step
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


def _loaded(fns, steps, threads, n, peer) -> dict:
    """Quiet one-thread sparse (and torch) steps, then every engine at `threads` beside n busy
    processes; the ratios the issue's target reads (loaded at all threads / quiet at one)."""
    from edgetune import _native as nat

    def set_threads(t):
        nat.set_num_threads(t)
        if peer is not None:
            peer.torch.set_num_threads(t)

    one = {k: f for k, f in fns.items() if k in ("sparse", "torch")}
    set_threads(1)
    try:
        quiet1 = round_robin(one, steps)
    finally:
        set_threads(threads)
    with background_load(n):
        loaded = round_robin(fns, steps)
    out = {"processes": n, "quiet_1_thread": quiet1, "loaded": loaded}
    for k in one:
        out[f"{k}_loaded_over_quiet_1_thread"] = loaded[k]["wall_ms"] / quiet1[k]["wall_ms"]
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
              memory: bool = True, background: int = 0, progress=None) -> dict:
    """Benchmark every model and print the table; returns {"results", "threads", "cpu", "simd"}.
    `progress` (default: stderr) gets a line as each model starts, so a long run is not silent."""
    if progress is None:
        progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    sd = simd()
    echo(f"edgetune bench: batch {batch_size}, {threads} threads, median of {steps} steps, {cpu_name()}, "
         f"kernels {sd['isa']} ({sd['floats']} floats per vector)"
         + (f", {background} busy background processes for the loaded times" if background else ""))
    echo(f"{'model':<24}{'sparsity':>9}{'0 px':>6}{'0 blk':>6}{'ideal':>7}{'sparse ms':>11}{'(cpu)':>8}"
         f"{'dense ms':>10}{'numpy ms':>10}{'torch ms':>10}{'(cpu)':>8}{'dense/torch':>12}{'torch/sparse':>13}"
         f"{'mac cost':>9}{'act KiB stored/dense':>22}{'step MiB sparse/dense/torch':>29}")
    for i, name in enumerate(models):
        progress(f"[{i + 1}/{len(models)}] {name}: timing sparse, dense_native, numpy, torch ({steps} steps each)" + (", then loaded" if background else "")
                 + (", then step memory" if memory else "") + " ...")
        r = bench_model(name, batch_size, steps, threads, data, memory=memory, background=background)
        results.append(r)
        torch_ms = r["torch_ms"]
        ab = r["activation_bytes"]
        zs = r["zero_structure"]
        cpu = r["cpu_ms"]
        pk = r.get("peak_bytes") or {}
        mem = "/".join(f"{pk[k] / 2**20:.1f}" if k in pk else "n/a" for k in ("sparse", "dense_native", "torch"))
        echo(f"{name:<24}{100 * r['act_sparsity']:>8.1f}%{100 * zs['zero_pixels']:>5.1f}%{100 * zs['zero_blocks']:>5.1f}%"
             f"{r['ideal_speedup']:>6.2f}x{r['sparse_ms']:>11.2f}{cpu['sparse']:>8.1f}"
             f"{r['dense_native_ms']:>10.2f}{r['numpy_ms']:>10.1f}"
             f"{('%.2f' % torch_ms) if torch_ms else 'n/a':>10}{('%.1f' % cpu['torch']) if torch_ms else '':>8}"
             f"{('%.2f' % (r['dense_native_ms'] / torch_ms)) if torch_ms else 'n/a':>12}"
             f"{('%.2fx' % (torch_ms / r['sparse_ms'])) if torch_ms else 'n/a':>13}"
             f"{r['mac_cost_ratio']:>9.2f}"
             f"{ab['stored'] / 1024:>13.0f}/{ab['dense'] / 1024:<8.0f}{mem:>29}")
        bg = r.get("background")
        if bg:
            ld, q1 = bg["loaded"], bg["quiet_1_thread"]
            line = (f"{'':<24}loaded ({bg['processes']} busy): sparse {ld['sparse']['wall_ms']:.2f} ms "
                    f"= {bg['sparse_loaded_over_quiet_1_thread']:.2f}x its quiet 1-thread {q1['sparse']['wall_ms']:.2f} ms")
            if "torch" in ld:
                line += (f"; torch {ld['torch']['wall_ms']:.2f} ms = {bg['torch_loaded_over_quiet_1_thread']:.2f}x "
                         f"its quiet 1-thread {q1['torch']['wall_ms']:.2f} ms")
            echo(line)
    if results:
        eff = [(r["dense_native_ms"] / r["sparse_ms"]) / r["ideal_speedup"] for r in results]
        echo(f"geomean (dense/sparse)/ideal = {geomean(eff):.2f}")
        echo(f"geomean mac_cost_ratio = {geomean([r['mac_cost_ratio'] for r in results]):.2f}")
        tr = [r["torch_ms"] / r["sparse_ms"] for r in results if r["torch_ms"]]
        if tr:
            echo(f"geomean torch/sparse = {geomean(tr):.2f}")
            echo(f"geomean dense_native/torch = "
                 f"{geomean([r['dense_native_ms'] / r['torch_ms'] for r in results if r['torch_ms']]):.2f}")
        if background:
            sp = [r["background"]["sparse_loaded_over_quiet_1_thread"] for r in results]
            echo(f"geomean loaded sparse / quiet 1-thread sparse = {geomean(sp):.2f}" + (
                f"; torch's = {geomean([r['background']['torch_loaded_over_quiet_1_thread'] for r in results]):.2f}"
                if all("torch_loaded_over_quiet_1_thread" in r["background"] for r in results) else ""))
    return {"results": results, "threads": threads, "cpu": cpu_name(), "simd": sd, "background": background}


def default_threads() -> int:
    """All cores the process may use."""
    from edgetune import _native as nat

    return int(nat.os_threads())
