"""`edgetune eval`: accuracy and loss of an ONNX file, computed by onnxruntime."""
from __future__ import annotations

import numpy as np

from .data import load_data, validate
from .errors import ModelError
from .losses import loss_and_grad, log_softmax
from .onnx_import import load_model, _resolve
from .onnx_export import ort_logits


def evaluate_onnx(model: str, data: str, split: str = "val") -> dict:
    """Run MODEL with onnxruntime on DATA's split and score it."""
    ir = load_model(model)            # validates the file and gives the input shape
    path = _resolve(model, True)
    ds = load_data(data, ir.input_shape)
    validate(ds, ir.input_shape)
    x, y = {"val": (ds.x_val, ds.y_val), "train": (ds.x, ds.y),
            "all": (np.concatenate([ds.x, ds.x_val]), np.concatenate([ds.y, ds.y_val]))}[split]
    try:
        out = ort_logits(path, x)
    except Exception as exc:
        raise ModelError(f"{model}: onnxruntime cannot run it ({str(exc).splitlines()[0][:200]})") from None
    validate(ds, ir.input_shape, num_classes=out.shape[1])
    if ir.final == "softmax":
        out = np.log(np.clip(out, 1e-30, None))
    elif ir.final is None:
        out = log_softmax(out.astype(np.float64))
    loss, _ = loss_and_grad("cross_entropy", out.astype(np.float32), y)
    return {"model": model, "data": data, "split": split, "n": int(len(y)),
            "accuracy": float((out.argmax(1) == y).mean()), "loss": loss}
