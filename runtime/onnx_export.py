"""Write the fine-tuned model: the imported graph (batch made symbolic, see onnx_batch) with
updated initializers and edgetune's metadata (class names, input normalization)."""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from .atomic import write_bytes

# metadata_props keys a user's inference code can read (documented in README "Exported files")
META_CLASSES = "classes"          # JSON list: output index -> label
META_NORMALIZE = "normalize"      # JSON {"mean": [...], "std": [...]} applied to [0, 1] inputs per channel
META_SOURCE = "finetuned_from"    # JSON {"model": ..., "data": ...}: bundled names, or absolute paths


def export_proto(model, params: dict, metadata: Optional[dict] = None):
    """A copy of `model`'s ONNX graph with the initializers named in `params` replaced."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto()
    proto.CopyFrom(model.onnx_model)
    for init in proto.graph.initializer:
        if init.name in params:
            init.CopyFrom(numpy_helper.from_array(np.asarray(params[init.name], np.float32), init.name))
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        for prop in proto.metadata_props:
            if prop.key == key:
                prop.value = text
                break
        else:
            proto.metadata_props.add(key=key, value=text)
    return proto


def export_onnx(model, params: dict, path: str, metadata: Optional[dict] = None) -> None:
    """Write `export_proto(...)` to `path` atomically."""
    write_bytes(path, export_proto(model, params, metadata).SerializeToString())


def ort_session(source, threads: Optional[int] = None):
    """An onnxruntime CPU session for a path or serialized model bytes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def ort_logits(path, x: np.ndarray, batch: int = 256, threads: Optional[int] = None) -> np.ndarray:
    """Run the exported file (a path or model bytes) with onnxruntime on CPU and return its output."""
    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def read_metadata(model) -> dict:
    """edgetune's metadata of an imported model: {'classes': [...] or None, 'normalize': {...} or None}."""
    out = {"classes": None, "normalize": None}
    for key in (META_CLASSES, META_NORMALIZE):
        text = model.metadata.get(key)
        if text:
            try:
                out[key] = json.loads(text)
            except (ValueError, RecursionError):     # not JSON, or nested deeper than Python's stack
                out[key] = None
    if not (isinstance(out["classes"], list) and all(isinstance(c, str) for c in out["classes"])):
        out["classes"] = None
    norm = out["normalize"]
    if not (isinstance(norm, dict) and isinstance(norm.get("mean"), list) and isinstance(norm.get("std"), list)):
        out["normalize"] = None
    return out


def read_provenance(path: str) -> dict:
    """The `finetuned_from` metadata of the ONNX file at `path` ({} when it has none or is not ONNX)."""
    import onnx

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable simply carries no provenance
        return {}
    for prop in proto.metadata_props:
        if prop.key == META_SOURCE:
            try:
                value = json.loads(prop.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}
