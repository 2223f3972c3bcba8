"""Write the fine-tuned model: the original graph with updated initializers."""
from __future__ import annotations

import numpy as np

from .atomic import atomic_write


def export_onnx(model, params: dict, path: str) -> None:
    """Copy `model`'s ONNX graph, replace the initializers named in `params`, write atomically."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto()
    proto.CopyFrom(model.onnx_model)
    for init in proto.graph.initializer:
        if init.name in params:
            init.CopyFrom(numpy_helper.from_array(np.asarray(params[init.name], np.float32), init.name))
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())


def ort_logits(path: str, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the exported file with onnxruntime on CPU and return its output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
