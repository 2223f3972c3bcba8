"""The op registry: every IR op is one file in this folder, and every engine loops over it.

An op file defines a subclass of `Op` and registers an instance (`register(MyOp())`). The
instance gives, in one place:

* ``onnx_ops`` and ``import_onnx``: which ONNX node types it imports, with their attribute
  checks (a clear error naming the node when something is out of reach);
* ``forward`` / ``backward``: the dense numpy reference, NCHW (the readable definition of what
  every engine computes; ``xs`` are the input values, ``get(role)`` a parameter);
* ``native_forward`` / ``native_backward``: the same on the native engine's channels-last
  arrays (`runtime/engines/native.py`);
* ``torch``: the op in torch.nn.functional, for the benchmark peer and the tests
  (`runtime/torch_peer.py`);
* ``rule``: how the non-zero positions (A) and the error set (G) pass through the op, shown by
  `edgetune info` (the activation rules themselves are the table of `runtime/constraints.py`);
* ``cost``: what the op costs on the modelled accelerator besides the Conv/Gemm MACs.

docs/ARCHITECTURE.md ("Adding an op") says how to add one. Conv and Gemm are ops here too; the
native engine runs them through its fused layer kernels (native/), not through this table.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

OPS: Dict[str, "Op"] = {}         # IR op name -> op
ONNX: Dict[str, "Op"] = {}        # ONNX op type -> the op that imports it


class Op:
    """One IR op (see the module docstring). Defaults: no parameters, elementwise cost 0."""

    name = ""
    onnx_ops: Tuple[str, ...] = ()
    trainable: Tuple[str, ...] = ()     # parameter roles that train (others are frozen buffers)
    rule = "G = all; its output's zeros are found by analysing it (kernels' analyze_input)"
    cost = "not modelled (no MACs on the PE array)"

    def node_rule(self, model, node) -> str:
        """The rule of one node of this op in `model` (ops whose rule depends on their inputs override it)."""
        return self.rule

    # -- import ---------------------------------------------------------------------------
    def import_onnx(self, imp, node, i, a) -> None:
        """Append IR nodes for ONNX `node` through the importer `imp` (runtime/onnx_import.py)."""
        imp.add(node, i, self.name, list(node.input[:1]))

    # -- dense reference (NCHW) ----------------------------------------------------------------
    def forward(self, node, xs: List[np.ndarray], get: Callable) -> Tuple[np.ndarray, object]:
        """(output, cache for backward)."""
        raise NotImplementedError(self.name)

    def backward(self, node, d, cache, get: Callable, need: List[bool]):
        """([gradient of each input or None], {parameter role: gradient})."""
        raise NotImplementedError(self.name)

    # -- native engine (channels-last) ------------------------------------------------------------
    def native_forward(self, eng, node, xs: List[np.ndarray]):
        """(output, ctx for native_backward, SparseInfo of the output or None). The default runs
        the dense forward, which is right for ops that act on the last (channel) axis alike."""
        return (*self.forward(node, xs, eng.param_getter(node)), None)

    def native_backward(self, eng, node, g, ctx, need: List[bool]):
        """([gradient of each input or None], {parameter role: gradient})."""
        return self.backward(node, g, ctx, eng.param_getter(node), need)

    # -- torch peer ----------------------------------------------------------------------------------
    def torch(self, F, t, node, a, p):
        """The op in torch: F is torch.nn.functional, t torch, a the inputs, p {role: tensor}."""
        raise NotImplementedError(self.name)


def register(op: Op) -> Op:
    """Add `op` to the registry (its IR name and its ONNX op types must be new)."""
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is registered twice")
    OPS[op.name] = op
    for t in op.onnx_ops:
        if t in ONNX:
            raise ValueError(f"ONNX op {t} is imported by both {ONNX[t].name!r} and {op.name!r}")
        ONNX[t] = op
    return op


def get(name: str) -> Op:
    """The op called `name` (KeyError names the known ones)."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"no op {name!r} (known: {', '.join(sorted(OPS))})") from None


def onnx_op(op_type: str) -> Optional[Op]:
    """The op importing ONNX `op_type`, or None."""
    return ONNX.get(op_type)


def supported_onnx() -> Tuple[str, ...]:
    """Every ONNX op type the importer takes, sorted."""
    return tuple(sorted(ONNX))


def trainable_roles() -> Dict[str, Tuple[str, ...]]:
    """IR op -> the parameter roles it trains."""
    return {name: op.trainable for name, op in OPS.items() if op.trainable}


# the op files; importing one registers it
from . import (activation, add, batchnorm, concat, constant, conv, dropout, flatten, gemm,  # noqa: E402,F401
               globalavgpool, maxpool, avgpool, mul, reshape, shuffle, split, softmax)
