"""`edgetune eval`: accuracy and loss of an ONNX file, computed by onnxruntime.

When the model carries class names (metadata `classes`, written by finetune), outputs are
mapped to labels: named data classes are matched by name, and per-class accuracy is
reported under those names. The model's metadata `normalize` is applied to the data
unless --normalize is given."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .data import load_data, validate
from .errors import ModelError
from .losses import loss_and_grad, log_softmax
from .onnx_import import load_model
from .onnx_export import ort_logits, read_metadata


def evaluate_onnx(model: str, data: str, split: str = "val", threads: Optional[int] = None,
                  normalize: Optional[Sequence[float]] = None) -> dict:
    """Run MODEL with onnxruntime on DATA's split and score it."""
    from .preflight import align_labels

    ir = load_model(model)            # validates the file and gives the input shape
    meta = read_metadata(ir)
    norm_source = "--normalize" if normalize is not None else None
    if normalize is None and meta["normalize"]:
        normalize = list(meta["normalize"]["mean"]) + list(meta["normalize"]["std"])
        norm_source = "the model's metadata"
    ds = load_data(data, ir.input_shape, normalize=normalize)
    validate(ds, ir.input_shape)
    labels = meta["classes"]
    if labels and ds.classes:
        align_labels(ds, labels, what=f"{model}'s classes")
    x, y = {"val": (ds.x_val, ds.y_val), "train": (ds.x, ds.y),
            "all": (np.concatenate([ds.x, ds.x_val]), np.concatenate([ds.y, ds.y_val]))}[split]
    try:
        # run the normalised proto: the file on disk may have a fixed batch that edgetune made symbolic
        out = ort_logits(ir.onnx_model.SerializeToString(), x, threads=threads)
    except Exception as exc:
        raise ModelError(f"{model}: onnxruntime cannot run it ({str(exc).splitlines()[0][:200]})") from None
    if not np.isfinite(out).all():
        raise ModelError(f"{model}: onnxruntime's outputs on {data} are not finite (NaN or overflow)")
    validate(ds, ir.input_shape, num_classes=out.shape[1], new_head_hint=False)
    if labels and len(labels) != out.shape[1]:
        labels = None
    if ir.final == "softmax":
        out = np.log(np.clip(out, 1e-30, None))
    elif ir.final is None:
        out = log_softmax(out.astype(np.float64))
    loss, _ = loss_and_grad("cross_entropy", out.astype(np.float32), y)
    pred = out.argmax(1)
    names = labels or ds.classes or [str(i) for i in range(out.shape[1])]
    per_class = []
    for k in sorted(set(y.tolist())):
        mask = y == k
        per_class.append({"class": names[k] if k < len(names) else str(k), "n": int(mask.sum()),
                          "accuracy": float((pred[mask] == k).mean())})
    return {"model": model, "data": data, "split": split, "n": int(len(y)),
            "accuracy": float((pred == y).mean()), "loss": loss, "labels": labels, "per_class": per_class,
            "normalize": norm_source, "data_summary": ds.summary,
            "predicted": [names[p] if p < len(names) else str(p) for p in pred[:5].tolist()]}
