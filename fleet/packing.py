"""Which tensors travel, and checks on what arrives (no Flower imports).

Only the trained tensors cross the network, keyed by their ONNX initializer names, as
little-endian float32 in the order the model lists them. A node checks what it receives
against its own model before touching its engine, so a node holding a different model
fails with a message that says so instead of a shape error deep in a kernel.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping

import numpy as np

from edgetune.runtime.errors import EdgetuneError

F32 = np.dtype("<f4")


class TensorMismatch(EdgetuneError):
    """Received tensors do not fit this node's model."""


def pack(params: Mapping[str, np.ndarray], names: Iterable[str]) -> Dict[str, np.ndarray]:
    """The tensors named in `names`, in that order, as contiguous float32 copies."""
    out: Dict[str, np.ndarray] = {}
    for name in names:
        if name not in params:
            raise TensorMismatch(f"no parameter named {name!r} to send")
        # np.array, not np.ascontiguousarray: the latter turns a 0-d tensor into shape (1,)
        out[name] = np.array(params[name], dtype=F32, order="C", copy=True)
    return out


def unpack(received: Mapping[str, np.ndarray], expected: Mapping[str, tuple]) -> Dict[str, np.ndarray]:
    """Check `received` against `expected` ({name: shape}) and return float32 arrays.

    The names must be exactly the expected ones: a missing or extra tensor, a wrong shape, a
    non-float dtype or a NaN/Inf value raises TensorMismatch naming the tensor.
    """
    missing = [k for k in expected if k not in received]
    extra = [k for k in received if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}")
        raise TensorMismatch("the received tensors do not match this node's trained tensors (" + "; ".join(parts)
                             + "): is every node running the same model and --train-layers?")
    out: Dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        arr = np.asarray(received[name])
        if tuple(arr.shape) != tuple(shape):
            raise TensorMismatch(f"tensor {name!r} arrived with shape {tuple(arr.shape)}, this node's model has "
                                 f"{tuple(shape)}")
        if arr.dtype.kind != "f":
            raise TensorMismatch(f"tensor {name!r} arrived as {arr.dtype}, expected floating point")
        if not np.isfinite(arr).all():
            raise TensorMismatch(f"tensor {name!r} arrived with NaN or Inf values")
        out[name] = arr.astype(F32, copy=True)
    return out


def tensor_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of tensor data (elements x item size), without names or headers."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def shapes(params: Mapping[str, np.ndarray], names: Iterable[str]) -> Dict[str, tuple]:
    """{name: shape} of the named parameters, in order."""
    return {n: tuple(np.shape(params[n])) for n in names}
