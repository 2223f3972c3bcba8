"""Checks that run before any training step, so a run never trains and then fails:

* `check_export`: the graph as it will be exported runs in onnxruntime with a batch size
  other than the one it was exported with, and gives what training computes;
* `engine_support`: which engines run the model (what `edgetune info` prints);
* `prepare_classes`: the model's outputs against the data's classes (`--num-classes`,
  class names by name, a clear word when the counts differ).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .errors import DataError, ModelError
from .onnx_batch import REEXPORT_HINT


def _probe_batch(model) -> int:
    return 3 if model.export_batch == 2 else 2


def _sample(model, x: Optional[np.ndarray]) -> np.ndarray:
    n = _probe_batch(model)
    if x is not None and len(x):
        return np.resize(x, (n,) + x.shape[1:]).astype(np.float32)
    shape = tuple(1 if d is None else d for d in model.input_shape[1:])
    return np.random.default_rng(0).random((n,) + shape).astype(np.float32)


# onnxruntime's logits may differ from edgetune's by float32 summation order only: 1e-6..1e-5 on
# the bundled models (models/catalog.json, ort_max_abs_diff_vs_torch), i.e. about 1e-6 of the
# logits' scale; the rounding error of a sum grows with its length (like its square root for
# random signs), so deeper and wider models get more. 1e-3 of the logits' scale (at least 1)
# leaves a factor 100 to 1000 for that, while a wrong operator, a wrong weight layout or an
# overflow is off by O(1) of the scale, and NaN or Inf is never accepted.
EXPORT_RTOL = 1e-3


def export_mismatch(got: np.ndarray, want: np.ndarray) -> Optional[str]:
    """Why onnxruntime's outputs `got` disagree with edgetune's `want`, or None: any non-finite
    value in either, or a max abs difference above EXPORT_RTOL x max(1, max |want|)."""
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        which = "onnxruntime's" if not np.isfinite(got).all() else "edgetune's"
        return f"{which} outputs are not finite (NaN or overflow)"
    diff = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
    bound = EXPORT_RTOL * max(1.0, float(np.abs(want).max(initial=0.0)))
    if diff > bound:
        return f"max abs diff {diff:.3g} exceeds {bound:.3g} ({EXPORT_RTOL:g} of the outputs' scale)"
    return None


def check_export(model, x: Optional[np.ndarray] = None) -> float:
    """Export the current weights in memory and run them with onnxruntime on a small batch;
    return the max abs difference to the dense engine (ModelError if it fails or differs)."""
    from .engines.dense import DenseEngine
    from .onnx_export import export_proto, ort_logits
    from .trainer import _apply_final

    xb = _sample(model, x)
    try:
        got = ort_logits(export_proto(model, model.params).SerializeToString(), xb)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        text = str(exc).strip().splitlines()
        raise ModelError(f"{model.source}: the fine-tuned model could not be exported: onnxruntime cannot run it "
                         f"with batch {len(xb)} ({text[0][:200] if text else type(exc).__name__}); "
                         f"{REEXPORT_HINT}") from None
    ref = DenseEngine()
    ref.load(model, [])
    with np.errstate(all="ignore"):     # an overflow is reported below, as a non-finite output
        want = _apply_final(model.final, ref.predict(xb))
    if got.shape != want.shape:
        raise ModelError(f"{model.source}: the exported graph gives shape {got.shape} where training computes "
                         f"{want.shape}; {REEXPORT_HINT}")
    if not np.isfinite(want).all():
        raise ModelError(f"{model.source}: the model's outputs are not finite (NaN or overflow) on a batch of "
                         f"{len(xb)}: its weights and inputs overflow float32")
    why = export_mismatch(got, want)
    if why is not None:
        raise ModelError(f"{model.source}: the exported graph differs from what edgetune trains on a batch of "
                         f"{len(xb)} ({why})")
    return float(np.abs(got - want).max())


def model_outputs(model, sample: np.ndarray) -> int:
    """The number of outputs (classes) the model gives for `sample` (DataError if it does not fit)."""
    from .engines.dense import DenseEngine

    probe = DenseEngine()
    probe.load(model, [])
    try:
        with np.errstate(all="ignore"):
            return int(probe.predict(sample).shape[1])
    except ValueError as exc:
        raise DataError(f"inputs of shape {sample.shape[1:]} do not fit the model ({exc})") from None


def engine_support(model) -> List[tuple]:
    """[(engine, ok, detail)] for the dense and native engines on a probe batch."""
    from .engines import make_engine

    xb = _sample(model, None)
    out = []
    for name in ("native", "dense"):
        try:
            eng = make_engine(name)
            eng.load(model, None)
            with np.errstate(all="ignore"):   # does it run? check_export judges the numbers
                eng.loss_and_grads(xb, np.zeros(len(xb), np.int64))
            out.append((name, True, ""))
        except Exception as exc:  # noqa: BLE001 - reported, not raised: info lists every engine
            out.append((name, False, str(exc).replace(f"{model.source}: ", "")))
    return out


def prepare_classes(cfg, model, ds, meta: dict, log, warn) -> Optional[List[str]]:
    """Replace the head (--num-classes), map named data classes onto named model outputs, and say
    so when the data's class count differs from the model's. Returns the output labels, if known."""
    from .heads import replace_head
    from .data import validate

    outputs = model_outputs(model, ds.x[:1])
    data_k = ds.num_classes()
    if cfg.num_classes:
        log(replace_head(model, cfg.num_classes, cfg.seed))
        outputs = cfg.num_classes
        if data_k < outputs:
            warn(f"--num-classes {outputs} but the data has {data_k} classes: outputs {data_k}..{outputs - 1} "
                 "get no training examples")
        labels = ds.classes if ds.classes and len(ds.classes) == outputs else None
    elif meta.get("classes") and ds.classes and len(meta["classes"]) == outputs:
        labels = meta["classes"]
        align_labels(ds, labels, what="the model's classes", hint=True)
        log(f"classes matched by name to the model's outputs ({', '.join(labels[:12])}"
            f"{', ...' if len(labels) > 12 else ''})")
    else:
        if data_k != outputs:
            if ds.classes:
                has = f"has {data_k} classes ({', '.join(ds.classes[:6])}{', ...' if data_k > 6 else ''})"
            else:
                has = f"has labels up to {data_k - 1} ({data_k} classes)"
            if data_k > outputs:
                raise DataError(f"{ds.name}: the data {has} but {cfg.model} has {outputs} outputs; add "
                                f"--num-classes {data_k} to replace its last layer with a new {data_k}-class layer")
            warn(f"the data {has} but {cfg.model} has {outputs} outputs: labels 0..{data_k - 1} train outputs "
                 f"0..{data_k - 1} and the other outputs get no examples; for a new {data_k}-class last layer "
                 f"add --num-classes {data_k}")
        labels = ds.classes if ds.classes and len(ds.classes) == outputs else meta.get("classes")
    validate(ds, model.input_shape, num_classes=outputs)
    return labels


def align_labels(ds, labels: List[str], what: str, hint: bool = False) -> None:
    """Renumber ds's labels so that class name ds.classes[i] becomes index labels.index(name)."""
    if ds.classes == labels:
        return
    missing = [c for c in ds.classes if c not in labels]
    if missing:
        extra = "; add --num-classes to train a new last layer for these classes" if hint else ""
        raise DataError(f"{ds.name}: class(es) {', '.join(missing)} are not among {what} "
                        f"({', '.join(labels[:12])}{', ...' if len(labels) > 12 else ''}){extra}")
    remap = np.array([labels.index(c) for c in ds.classes], np.int64)
    ds.y, ds.y_val = remap[ds.y], remap[ds.y_val]
    ds.classes = list(labels)
