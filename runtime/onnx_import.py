"""ONNX -> IR. Covers what torch.onnx.export (TorchScript and torch.export based) emits
for CNNs and MLPs; everything else is a clear error naming the op and node."""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from . import ties
from .errors import ModelError
from .ir import Model, Node

SUPPORTED_OPS = (
    "Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "HardSwish", "HardSigmoid", "LeakyRelu",
    "Sigmoid", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape",
    "BatchNormalization", "Dropout", "Identity", "Constant", "Softmax", "LogSoftmax",
)
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

    def add(self, node, i, op, inputs, params=None, attrs=None):
        self.nodes.append(Node(node.name or f"{node.op_type}_{i}", op,
                               [self.value(x) for x in inputs], node.output[0],
                               params or {}, attrs or {}, node.op_type))

    # -- per op -----------------------------------------------------------------
    def convert(self, node, i):
        op, a = node.op_type, _attrs(node)
        if node.domain not in ("", "ai.onnx"):
            self.fail(f"unsupported op {node.domain}.{op} in node {node.name!r}; supported ops: {', '.join(SUPPORTED_OPS)}")
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            self.fail(f"unsupported op {op} in node {node.name!r}; supported ops: {', '.join(SUPPORTED_OPS)}")
        handler(node, i, a)

    def op_Constant(self, node, i, a):
        from onnx import numpy_helper

        if "value" in a:
            self.consts[node.output[0]] = numpy_helper.to_array(a["value"])
        elif "value_float" in a:
            self.consts[node.output[0]] = np.array(a["value_float"], np.float32)
        elif "value_floats" in a:
            self.consts[node.output[0]] = np.array(a["value_floats"], np.float32)
        elif "value_int" in a:
            self.consts[node.output[0]] = np.array(a["value_int"], np.int64)
        elif "value_ints" in a:
            self.consts[node.output[0]] = np.array(a["value_ints"], np.int64)
        else:
            self.fail(f"Constant node {node.name!r}: unsupported value attribute")

    def op_Identity(self, node, i, a):
        if node.input[0] in self.consts:
            self.consts[node.output[0]] = self.consts[node.input[0]]
        else:
            self.alias[node.output[0]] = self.value(node.input[0])

    def op_Dropout(self, node, i, a):
        # Exported graphs are in inference mode; fine-tuning keeps Dropout off (documented).
        self.alias[node.output[0]] = self.value(node.input[0])

    def op_Conv(self, node, i, a):
        w = self.consts.get(node.input[1])
        if w is None or w.ndim != 4:
            self.fail(f"Conv node {node.name!r}: only 2-D convolution with constant weights is supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            self.fail(f"Conv node {node.name!r}: auto_pad={a['auto_pad']!r} is not supported; use explicit pads")
        params = {"W": self.param(node.input[1], node)}
        if len(node.input) > 2 and node.input[2]:
            params["B"] = self.param(node.input[2], node)
        attrs = {"stride": tuple(a.get("strides", (1, 1))), "pads": tuple(a.get("pads", (0, 0, 0, 0))),
                 "dilation": tuple(a.get("dilations", (1, 1))), "group": int(a.get("group", 1)),
                 "kernel": tuple(w.shape[2:])}
        self.add(node, i, "conv", [node.input[0]], params, attrs)

    def op_Gemm(self, node, i, a):
        if a.get("transA", 0):
            self.fail(f"Gemm node {node.name!r}: transA=1 is not supported")
        w = self.consts.get(node.input[1])
        if w is None or w.ndim != 2:
            self.fail(f"Gemm node {node.name!r}: the weight (input B) must be a 2-D constant initializer")
        params = {"W": self.param(node.input[1], node)}
        if len(node.input) > 2 and node.input[2]:
            params["B"] = self.param(node.input[2], node)
        attrs = {"transB": int(a.get("transB", 0)), "alpha": float(a.get("alpha", 1.0)),
                 "beta": float(a.get("beta", 1.0))}
        self.add(node, i, "gemm", [node.input[0]], params, attrs)

    def op_MatMul(self, node, i, a):
        w = self.consts.get(node.input[1])
        if w is None or w.ndim != 2:
            self.fail(f"MatMul node {node.name!r}: only activation x constant 2-D weight is supported")
        attrs = {"transB": 0, "alpha": 1.0, "beta": 1.0}
        self.add(node, i, "gemm", [node.input[0]], {"W": self.param(node.input[1], node)}, attrs)

    def op_Add(self, node, i, a):
        x, y = node.input[0], node.input[1]
        if x in self.consts and y not in self.consts:
            x, y = y, x
        if y in self.consts:
            prev = self.nodes[-1] if self.nodes else None
            bias = self.consts[y]
            # MatMul + Add(bias) is how torch writes Linear without Gemm: fold the bias in.
            if (prev is not None and prev.op == "gemm" and "B" not in prev.params
                    and prev.output == self.value(x) and bias.ndim <= 1):
                prev.params["B"] = self.param(y, node)
                self.alias[node.output[0]] = prev.output
                return
            self.add(node, i, "add_param", [x], {"B": self.param(y, node)})
            return
        self.add(node, i, "add", [x, y])

    def op_Relu(self, node, i, a):
        self.add(node, i, "relu", [node.input[0]])

    def op_Clip(self, node, i, a):
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node.input[1], "min", node))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node.input[2], "max", node))
        self.add(node, i, "clip", [node.input[0]], attrs={"min": float(lo), "max": float(hi)})

    def op_HardSwish(self, node, i, a):
        self.add(node, i, "hardswish", [node.input[0]])

    def op_HardSigmoid(self, node, i, a):
        self.add(node, i, "hardsigmoid", [node.input[0]],
                 attrs={"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))})

    def op_LeakyRelu(self, node, i, a):
        self.add(node, i, "leakyrelu", [node.input[0]], attrs={"alpha": float(a.get("alpha", 0.01))})

    def op_Sigmoid(self, node, i, a):
        self.add(node, i, "sigmoid", [node.input[0]])

    def _pool_attrs(self, node, a):
        k = tuple(a["kernel_shape"])
        if len(k) != 2:
            self.fail(f"{node.op_type} node {node.name!r}: only 2-D pooling is supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            self.fail(f"{node.op_type} node {node.name!r}: auto_pad is not supported; use explicit pads")
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            self.fail(f"{node.op_type} node {node.name!r}: dilated pooling is not supported")
        return {"kernel": k, "stride": tuple(a.get("strides", (1, 1))),
                "pads": tuple(a.get("pads", (0, 0, 0, 0))), "ceil_mode": int(a.get("ceil_mode", 0))}

    def op_MaxPool(self, node, i, a):
        if len(node.output) > 1 and node.output[1]:
            self.fail(f"MaxPool node {node.name!r}: the Indices output is not supported")
        self.add(node, i, "maxpool", [node.input[0]], attrs=self._pool_attrs(node, a))

    def op_AveragePool(self, node, i, a):
        attrs = self._pool_attrs(node, a)
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
        self.add(node, i, "avgpool", [node.input[0]], attrs=attrs)

    def op_GlobalAveragePool(self, node, i, a):
        self.add(node, i, "globalavgpool", [node.input[0]], attrs={"keepdims": 1})

    def op_ReduceMean(self, node, i, a):
        axes = a.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], "axes", node).tolist()
        if axes is None or sorted(int(x) % 4 for x in axes) != [2, 3]:
            self.fail(f"ReduceMean node {node.name!r}: only the spatial mean over axes (2, 3) of an NCHW tensor is supported, got axes={axes}")
        self.add(node, i, "globalavgpool", [node.input[0]], attrs={"keepdims": int(a.get("keepdims", 1))})

    def op_Flatten(self, node, i, a):
        if int(a.get("axis", 1)) != 1:
            self.fail(f"Flatten node {node.name!r}: only axis=1 is supported")
        self.add(node, i, "flatten", [node.input[0]])

    def op_Reshape(self, node, i, a):
        shape = [int(s) for s in self.const(node.input[1], "shape", node).tolist()]
        self.add(node, i, "reshape", [node.input[0]], attrs={"shape": tuple(shape)})

    def op_BatchNormalization(self, node, i, a):
        roles = ("scale", "B", "mean", "var")
        params = {r: self.param(n, node) for r, n in zip(roles, node.input[1:5])}
        if a.get("training_mode", 0):
            self.fail(f"BatchNormalization node {node.name!r}: training_mode=1 graphs are not supported")
        self.add(node, i, "batchnorm", [node.input[0]], params, {"epsilon": float(a.get("epsilon", 1e-5))})

    def op_Softmax(self, node, i, a):
        self.add(node, i, "softmax", [node.input[0]], attrs={"axis": int(a.get("axis", -1))})

    def op_LogSoftmax(self, node, i, a):
        self.add(node, i, "logsoftmax", [node.input[0]], attrs={"axis": int(a.get("axis", -1))})


def _type_name(elem: int) -> str:
    from onnx import TensorProto

    return TensorProto.DataType.Name(elem).lower() if elem else "undefined"


def _check_batch(model: Model) -> None:
    if len(model.input_shape) not in (2, 4):
        raise ModelError(f"{model.source}: input rank {len(model.input_shape)} is not supported "
                         "(expected (N, F) or (N, C, H, W))")
