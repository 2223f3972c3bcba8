"""Blob encodings: batches (compressed activations), tensor sets, model descriptors, bf16.

See PROTOCOL.md section 5. Everything is little-endian; tensors are C-order.
"""
from __future__ import annotations

import json
import struct
from typing import Dict, Tuple

import numpy as np

F32 = np.float32

# -- bf16 --------------------------------------------------------------------


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=F32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, (u >> 16) | 0x40, rounded).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(F32)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bf16, kept as float32."""
    return from_bf16_bits(to_bf16_bits(x)).reshape(np.shape(x))


# -- batches -----------------------------------------------------------------
X_DENSE_F32, X_MASKED_F32, X_MASKED_BF16 = 0, 1, 2
Y_CLASS_I32, Y_TARGET_F32 = 1, 2
_TENSOR_HEAD = struct.Struct("<BB2x")


def _dims(shape) -> bytes:
    return b"".join(struct.pack("<I", int(d)) for d in shape)


def encode_activation(x: np.ndarray, value_format: str = "fp32") -> bytes:
    """A tensor as mask + non-zeros (or dense when that is smaller)."""
    x = np.ascontiguousarray(x, dtype=F32)
    flat = x.reshape(-1)
    nz = flat != 0
    nnz = int(nz.sum())
    vbytes = 2 if value_format == "bf16" else 4
    masked_size = (flat.size + 7) // 8 + 4 + nnz * vbytes
    if value_format != "bf16" and masked_size >= flat.size * 4:
        return _TENSOR_HEAD.pack(X_DENSE_F32, x.ndim) + _dims(x.shape) + flat.astype("<f4").tobytes()
    kind = X_MASKED_BF16 if value_format == "bf16" else X_MASKED_F32
    mask = np.packbits(nz, bitorder="little").tobytes()
    vals = flat[nz]
    vals_b = to_bf16_bits(vals).astype("<u2").tobytes() if kind == X_MASKED_BF16 else vals.astype("<f4").tobytes()
    return _TENSOR_HEAD.pack(kind, x.ndim) + _dims(x.shape) + mask + struct.pack("<I", nnz) + vals_b


def decode_activation(buf: bytes, pos: int = 0) -> Tuple[np.ndarray, int]:
    kind, ndim = _TENSOR_HEAD.unpack_from(buf, pos)
    pos += _TENSOR_HEAD.size
    shape = struct.unpack_from(f"<{ndim}I", buf, pos)
    pos += 4 * ndim
    count = int(np.prod(shape, dtype=np.int64))
    if count > 1 << 28:
        raise ValueError("tensor too large")
    if kind == X_DENSE_F32:
        x = np.frombuffer(buf, "<f4", count, pos).astype(F32)
        return x.reshape(shape), pos + 4 * count
    if kind not in (X_MASKED_F32, X_MASKED_BF16):
        raise ValueError(f"unknown activation format {kind}")
    mbytes = (count + 7) // 8
    mask = np.unpackbits(np.frombuffer(buf, np.uint8, mbytes, pos), count=count, bitorder="little").astype(bool)
    pos += mbytes
    (nnz,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    if nnz != int(mask.sum()):
        raise ValueError("mask and non-zero count disagree")
    if kind == X_MASKED_F32:
        vals = np.frombuffer(buf, "<f4", nnz, pos).astype(F32)
        pos += 4 * nnz
    else:
        vals = from_bf16_bits(np.frombuffer(buf, "<u2", nnz, pos))
        pos += 2 * nnz
    x = np.zeros(count, F32)
    x[mask] = vals
    return x.reshape(shape), pos


def encode_batch(x: np.ndarray, y=None, value_format: str = "fp32") -> bytes:
    """x as a compressed activation, then the labels (class ids int32 or float targets)."""
    out = encode_activation(x, value_format)
    if y is None:
        return out + _TENSOR_HEAD.pack(0, 0)
    y = np.asarray(y)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return out + _TENSOR_HEAD.pack(Y_CLASS_I32, 1) + _dims(y.shape) + y.astype("<i4").tobytes()
    y = np.ascontiguousarray(y, F32)
    return out + _TENSOR_HEAD.pack(Y_TARGET_F32, y.ndim) + _dims(y.shape) + y.astype("<f4").tobytes()


def decode_batch(buf: bytes):
    """-> (x float32, y or None). Raises ValueError/struct.error on malformed input."""
    x, pos = decode_activation(buf)
    kind, ndim = _TENSOR_HEAD.unpack_from(buf, pos)
    pos += _TENSOR_HEAD.size
    shape = struct.unpack_from(f"<{ndim}I", buf, pos)
    pos += 4 * ndim
    count = int(np.prod(shape, dtype=np.int64)) if ndim else 0
    if kind == 0:
        y = None
    elif kind == Y_CLASS_I32:
        y = np.frombuffer(buf, "<i4", count, pos).astype(np.int64).reshape(shape)
        pos += 4 * count
    elif kind == Y_TARGET_F32:
        y = np.frombuffer(buf, "<f4", count, pos).astype(F32).reshape(shape)
        pos += 4 * count
    else:
        raise ValueError(f"unknown label format {kind}")
    if pos != len(buf):
        raise ValueError("trailing bytes after batch")
    return x, y


# -- tensor sets -----------------------------------------------------------------


def encode_tensor_set(tensors: Dict[str, np.ndarray], meta: dict = None) -> bytes:
    """u32 header length, JSON header, then 4-byte aligned float32 data."""
    index, chunks, off = [], [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, F32).astype("<f4").tobytes()
        index.append({"name": name, "dtype": "f32", "shape": [int(d) for d in np.shape(arr)],
                      "offset": off, "nbytes": len(data)})
        chunks.append(data)
        off += len(data)
    head = json.dumps({"meta": meta or {}, "tensors": index}, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 4)
    return struct.pack("<I", len(head)) + head + b"".join(chunks)


def decode_tensor_set(buf: bytes):
    """-> (meta, {name: float32 array})."""
    (hlen,) = struct.unpack_from("<I", buf, 0)
    head = json.loads(bytes(buf[4:4 + hlen]).decode())
    base = 4 + hlen
    out = {}
    for t in head["tensors"]:
        if t.get("dtype") != "f32":
            raise ValueError(f"tensor {t.get('name')!r}: dtype {t.get('dtype')!r} is not f32")
        count = int(np.prod(t["shape"], dtype=np.int64))
        if t["nbytes"] != 4 * count or base + t["offset"] + t["nbytes"] > len(buf):
            raise ValueError(f"tensor {t['name']!r}: bad size or offset")
        out[t["name"]] = np.frombuffer(buf, "<f4", count, base + t["offset"]).astype(F32).reshape(t["shape"])
    return head.get("meta", {}), out


def state_to_tensor_set(params: Dict[str, np.ndarray], opt_state: dict = None, step: int = None) -> bytes:
    """Parameters and optimizer state as one tensor set (names param/X, opt/GROUP/X)."""
    tensors = {f"param/{k}": v for k, v in params.items()}
    meta: dict = {}
    if step is not None:
        meta["step"] = int(step)
    if opt_state is not None:
        scalars = {}
        for key, val in opt_state.items():
            if isinstance(val, dict):
                tensors.update({f"opt/{key}/{k}": v for k, v in val.items()})
                scalars.setdefault("_groups", []).append(key)
            else:
                scalars[key] = val if isinstance(val, (int, float, str)) else float(val)
        meta["opt"] = scalars
    return encode_tensor_set(tensors, meta)


def tensor_set_to_state(buf: bytes):
    """-> (params, opt_state or None, step or None)."""
    meta, tensors = decode_tensor_set(buf)
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param/")}
    opt = None
    if "opt" in meta:
        opt = {k: v for k, v in meta["opt"].items() if k != "_groups"}
        for g in meta["opt"].get("_groups", []):
            opt[g] = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, group, name = k.split("/", 2)
                opt.setdefault(group, {})[name] = v
    return params, opt, meta.get("step")


# -- model descriptor ------------------------------------------------------------


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(i) for i in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def encode_model_descriptor(model, trainable, optimizer, loss: str) -> bytes:
    """The layer descriptors (JSON): graph, parameter shapes, what to train and how."""
    desc = {
        "format": 1,
        "input_name": model.input_name,
        "input_shape": [None if d is None else int(d) for d in model.input_shape],
        "output_name": model.output_name,
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "output": n.output,
                   "params": dict(n.params), "attrs": {k: _jsonable(v) for k, v in n.attrs.items()},
                   "onnx_op": n.onnx_op} for n in model.nodes],
        "params": [{"name": k, "shape": [int(d) for d in v.shape]} for k, v in model.params.items()],
        "trainable": list(trainable),
        "optimizer": {k: _jsonable(v) for k, v in optimizer.to_dict().items()},
        "loss": loss,
    }
    return json.dumps(desc, separators=(",", ":")).encode()


def decode_model_descriptor(buf: bytes) -> dict:
    """The descriptor as a dict (the device builds its model from it); ValueError when it is not format 1."""
    d = json.loads(bytes(buf).decode())
    if not isinstance(d, dict) or d.get("format") != 1:
        raise ValueError(f"descriptor format {d.get('format') if isinstance(d, dict) else d!r} is not 1")
    return d
