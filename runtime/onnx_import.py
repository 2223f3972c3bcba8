"""ONNX -> IR. Covers what torch.onnx.export (TorchScript and torch.export based) emits
for CNNs and MLPs; everything else is a clear error naming the op and node.

Each ONNX op is imported by its op file in runtime/ops/ (the registry); this module reads the
file, keeps the importer's state (constants, aliases, the IR nodes so far) and reports errors."""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from . import ties
from .errors import ModelError
from .ir import Model, Node
from . import ops as _ops

_FLOAT = 1  # onnx.TensorProto.FLOAT


def load_model(path_or_name, bundled: bool = True, untie: bool = False) -> Model:
    """Load an ONNX file (or the name of a bundled model) into the IR.

    `untie`: give each reader of a shared initializer its own copy (runtime/ties.py says what
    happens to shared initializers either way)."""
    from onnx import numpy_helper

    from .model_check import check_ir, check_proto, read_model

    path = _resolve(str(path_or_name), bundled)
    proto = read_model(path)
    check_proto(proto, path)     # before onnx's shape inference or numpy sees any of it
    from .onnx_batch import normalise

    norm = normalise(proto, path)
    proto, graph = norm.proto, norm.proto.graph
    consts: Dict[str, np.ndarray] = {}
    for init in graph.initializer:
        try:
            consts[init.name] = numpy_helper.to_array(init)
        except Exception as exc:
            raise ModelError(f"{path}: initializer {init.name!r} is unreadable ({_first_line(exc)})") from None
    model = _Importer(path, proto, dict(consts)).run()
    copies, tie_notes = ties.rewrite(model, graph, untie)
    if copies:
        consts.update({copy: consts[name] for copy, name in copies.items()})
        model = _Importer(path, proto, consts).run()
    model.notes, model.export_batch = norm.notes + tie_notes, norm.export_batch
    model.metadata = {p.key: p.value for p in proto.metadata_props}
    check_ir(model)
    return model


def _resolve(path: str, bundled: bool) -> str:
    if os.path.exists(path):
        if os.path.isdir(path):
            raise ModelError(f"{path}: is a folder, not an ONNX file")
        return path
    if bundled:
        from edgetune import models

        if models.is_bundled_model(path):
            return str(models.model_path(path))
    raise ModelError(f"{path}: no such model file or bundled model (see 'edgetune models')")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, path, proto, consts):
        self.path, self.proto, self.consts = path, proto, consts
        self.alias: Dict[str, str] = {}
        self.nodes: List[Node] = []
        self.params: Dict[str, np.ndarray] = {}
        self.shuffled: Dict[str, tuple] = {}   # a channel shuffle's transposed value -> (C, H, W)

    def fail(self, msg: str):
        raise ModelError(f"{self.path}: {msg}")

    def run(self) -> Model:
        graph = self.proto.graph
        inputs = [i for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            self.fail(f"expected exactly one data input, found {len(inputs)}")
        inp = inputs[0]
        elem = inp.type.tensor_type.elem_type
        if elem != _FLOAT:
            self.fail(f"input {inp.name!r} has element type {_type_name(elem)}; only float32 models are supported")
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in inp.type.tensor_type.shape.dim)
        for i, n in enumerate(graph.node):
            self.convert(n, i)
        for value in self.shuffled:
            self.fail(f"the channel shuffle's transposed value {value!r} is not reshaped back to (N, C, H, W)")
        if len(graph.output) != 1:
            self.fail(f"expected exactly one output, found {len(graph.output)}")
        out = self.value(graph.output[0].name)
        final = None
        if self.nodes and self.nodes[-1].op in ("softmax", "logsoftmax") and self.nodes[-1].output == out:
            final = self.nodes.pop()
            out = final.inputs[0]
            final = final.op
        for n in self.nodes:
            if n.op in ("softmax", "logsoftmax"):
                self.fail(f"{n.onnx_op} node {n.name!r} is only supported as the last node")
        if not self.params:
            self.fail("the model has no float parameters to train")
        model = Model(self.nodes, self.params, inp.name, shape, out, final, self.proto, self.path)
        _check_batch(model)
        return model

    # -- helpers --------------------------------------------------------------
    def value(self, name: str) -> str:
        return self.alias.get(name, name)

    def const(self, name: str, what: str, node) -> np.ndarray:
        if name not in self.consts:
            self.fail(f"{node.op_type} node {node.name!r}: {what} must be a constant initializer")
        return self.consts[name]

    def param(self, name: str, node) -> str:
        arr = self.const(name, "parameter", node)
        if arr.dtype != np.float32:
            self.fail(f"{node.op_type} node {node.name!r}: parameter {name!r} is {arr.dtype}; "
                      "only float32 models are supported (quantised models are not)")
        self.params[name] = np.array(arr, copy=True)
        return name

    def add(self, node, i, op, inputs, params=None, attrs=None, output=None, suffix=""):
        """Append an IR node for ONNX `node` (`output`: another of its outputs; `suffix` tells the
        IR nodes of one multi-output ONNX node apart)."""
        self.nodes.append(Node((node.name or f"{node.op_type}_{i}") + suffix, op,
                               [self.value(x) for x in inputs], output or node.output[0],
                               params or {}, attrs or {}, node.op_type))

    def readers(self, name: str) -> List[object]:
        """The ONNX nodes that read value `name`."""
        return [n for n in self.proto.graph.node if name in n.input]

    def convert(self, node, i):
        op, a = node.op_type, _attrs(node)
        supported = ", ".join(_ops.supported_onnx())
        if node.domain not in ("", "ai.onnx"):
            self.fail(f"unsupported op {node.domain}.{op} in node {node.name!r}; supported ops: {supported}")
        handler = _ops.onnx_op(op)
        if handler is None:
            self.fail(f"unsupported op {op} in node {node.name!r}; supported ops: {supported}")
        handler.import_onnx(self, node, i, a)
        for out in node.output[1:]:
            if out and not any(n.output == out for n in self.nodes) and self.readers(out):
                self.fail(f"{op} node {node.name!r}: its output {out!r} is not supported")


def _type_name(elem: int) -> str:
    from onnx import TensorProto

    return TensorProto.DataType.Name(elem).lower() if elem else "undefined"


def _check_batch(model: Model) -> None:
    if len(model.input_shape) not in (2, 4):
        raise ModelError(f"{model.source}: input rank {len(model.input_shape)} is not supported "
                         "(expected (N, F) or (N, C, H, W))")
