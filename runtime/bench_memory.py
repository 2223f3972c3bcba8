"""Step memory for `edgetune bench`: how much a training step grows the process, per engine.

Each engine runs in a child process of its own (so that one engine's buffers, caches and
libraries never count against another's): it loads the model, the engine and the batch, resets
the process's high-water mark of resident memory to what is resident now (Linux: writing 5 to
/proc/self/clear_refs), runs `steps` training steps (forward and backward, what the bench times,
for every engine alike), and reads the mark again. The step memory is the mark's rise above the
resident memory at the reset; the whole-process peak is reported beside it (torch's library
alone is about 200 MiB of it).

Without the reset the mark would still hold the peak of loading the model: a large external
model (a torchvision resnet18 export parses into several copies of its 45 MB of weights) peaks
higher while loading than while training, and its step memory read as 0.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Optional

ENGINES = ("sparse", "dense_native", "torch")


def _status_kib(field: str) -> Optional[int]:
    """A field of /proc/self/status in KiB (None where there is no such file)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> Optional[int]:
    """Reset this process's resident high-water mark to its resident memory now; returns that
    (bytes), or None where the kernel cannot (not Linux, or older than 4.0)."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    rss, hwm = _status_kib("VmRSS"), _status_kib("VmHWM")
    if rss is None or hwm is None or hwm > rss + 1024:   # the reset did not take
        return None
    return rss * 1024


def _rss_bytes() -> int:
    """This process's high-water mark of resident memory."""
    # Linux: VmHWM belongs to this process's own address space. ru_maxrss would not do: exec
    # keeps the larger mark of the process that forked it (the bench's parent, torch loaded,
    # ~400 MiB), so every child would report that and a step growth of 0.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # elsewhere: Linux-like systems report KiB, macOS bytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def step_memory(model: str, engine: str, batch_size: int, threads: int, data: Optional[str] = None,
                steps: int = 5, timeout: float = 600.0) -> dict:
    """Run `steps` training steps of `engine` in a child process; returns
    {"step_bytes": growth of the high-water mark during the steps, "peak_bytes": the whole process's}."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    cmd = [sys.executable, "-m", "edgetune.runtime.bench_memory", model, engine, str(batch_size), str(threads),
           str(steps), data or ""]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe of {model} ({engine}) failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(model_name: str, engine: str, batch_size: int, threads: int, steps: int, data: str) -> dict:
    import numpy as np

    from .bench import _batch
    from .onnx_import import load_model

    model = load_model(model_name)
    x, y = _batch(model_name, model, batch_size, data or None)
    if y is None:
        y = np.zeros(len(x), np.int64)
    trainable = model.trainable_names()
    if engine == "torch":
        from .torch_peer import TorchPeer

        peer = TorchPeer(model, model.params, threads=threads)
        step = lambda: peer.loss_and_grads(x, y, trainable)  # noqa: E731
    else:
        from .engines import make_engine

        eng = make_engine("native", threads=threads, dense=engine == "dense_native")
        eng.load(model, trainable)
        step = lambda: eng.loss_and_grads(x, y)  # noqa: E731
    base = reset_peak()   # after loading: the steps' rise is measured from here
    before = base if base is not None else _rss_bytes()
    for _ in range(steps):
        step()
    after = _rss_bytes()
    return {"step_bytes": max(0, after - before), "peak_bytes": after, "hwm_reset": base is not None}


if __name__ == "__main__":
    name, eng, bs, th, n, data = sys.argv[1:7]
    print(json.dumps(_child(name, eng, int(bs), int(th), int(n), data)))
