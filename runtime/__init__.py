"""edgetune.runtime: model IR, ONNX import/export, engines, trainer and CLI."""
from __future__ import annotations

from .errors import EdgetuneError, ModelError, DataError, UsageError

__all__ = ["load_model", "compute_gradients", "EdgetuneError", "ModelError", "DataError", "UsageError"]


def compute_gradients(model, x, y, engine: str = "native", loss: str = "cross_entropy"):
    """Loss and gradients of every trainable parameter for one batch.

    Returns (loss: float, grads: {initializer_name: ndarray with the initializer's shape}).
    `model` is an IR Model (from load_model) or a path/bundled name.
    """
    import numpy as np

    from .engines import make_engine

    if not hasattr(model, "nodes"):
        from .onnx_import import load_model

        model = load_model(model)
    eng = make_engine(engine)
    eng.load(model, loss=loss)
    try:
        return eng.loss_and_grads(np.asarray(x, np.float32), np.asarray(y))
    finally:
        eng.close()


def __getattr__(name):
    # load_model is imported on first use: importing edgetune.runtime.errors (which the firmware
    # bridge's protocol layer does) must not pull in ONNX and the trainer
    if name == "load_model":
        from .onnx_import import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
