"""Model validation: an ONNX file is checked before anything allocates for it or hands it to
onnx's shape inference, onnxruntime or edgetune's C++ kernels, so a damaged or hostile file ends
in one ModelError naming the file and the problem, within bounded time and memory.

Three stages (runtime/onnx_import.load_model runs them in this order):

1. `read_model(path)`: a regular file of at most 2 GiB (never a FIFO or a device), parsed
   without its external data until every reference is checked (a regular file in the model's
   folder, long enough for what the tensor declares).
2. `check_proto(proto, path)`: the protobuf alone: the ai.onnx opset and IR version, the ops
   (supported ones, or ones with plain attributes that import may fold away), unique value,
   node and initializer names, every node input produced before it is read (no cycle, nothing
   deleted), each supported op's input count and attributes (types and ranges), every tensor's
   element type, dims and data length, and the data input's dims.
3. `check_ir(model)`: the imported graph: unique node names, finite parameters, and a shape walk
   at batch 1 in integer arithmetic that checks each node's operands against each other
   (channels, features, broadcasting) and bounds the memory one sample's forward pass needs.

Each IR op has a rule in SHAPE_RULES; an op without one leaves the values after it unchecked.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .errors import ModelError
from .input_files import regular_file_size

MIN_OPSET = 7                 # the oldest ai.onnx opset with today's Add/Gemm broadcasting
MAX_DIM = 1 << 24             # any one dimension of a tensor or of the data input
MAX_TENSOR_ELEMS = 1 << 28    # one initializer: 1 GiB of float32
MAX_SAMPLE_ELEMS = 1 << 25    # every value of one sample's forward pass: 128 MiB of float32
MAX_GEOMETRY = 1 << 12        # a kernel size, stride or dilation (pads: below it)
MAX_NODES = 100_000
MAX_RANK = 8


def _tensor_types() -> Dict[int, Tuple[int, str]]:
    """element type -> (bytes per element, the repeated field holding values without raw_data)."""
    from onnx import TensorProto as T

    small = "int32_data"   # onnx.proto: every type narrower than 32 bits is stored in int32_data
    return {T.FLOAT: (4, "float_data"), T.DOUBLE: (8, "double_data"), T.INT64: (8, "int64_data"),
            T.UINT64: (8, "uint64_data"), T.UINT32: (4, "uint64_data"), T.INT32: (4, small),
            T.INT16: (2, small), T.UINT16: (2, small), T.INT8: (1, small), T.UINT8: (1, small),
            T.BOOL: (1, small), T.FLOAT16: (2, small), T.BFLOAT16: (2, small)}


# ------------------------------------------------------------------ 1. reading the file
def read_model(path: str):
    """The ModelProto of `path`, external data loaded after its references are checked."""
    import onnx

    regular_file_size(path, ModelError, "model")
    with open(path, "rb") as f:
        data = f.read()
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, UnicodeDecodeError, ...
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (the graph has no nodes)")
    external = [t for t in _all_tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        base = os.path.dirname(os.path.abspath(path))
        for t in external:
            _check_external(t, base, path)
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(proto, base)
        except Exception as exc:  # noqa: BLE001 - onnx's own confinement and I/O errors
            raise ModelError(f"{path}: external data cannot be read ({_first_line(exc)})") from None
    return proto


def _all_tensors(proto):
    """The initializers and the tensors of Constant-like attributes of the main graph."""
    out = list(proto.graph.initializer)
    for n in proto.graph.node:
        out += [a.t for a in n.attribute if a.HasField("t")]
    return out


def _check_external(t, base: str, path: str) -> None:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    where = f"{path}: initializer {t.name!r} keeps its data in {loc!r}"
    if not loc or os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/"):
        raise ModelError(f"{where}; external data must be a file in the model's folder")
    file = os.path.join(base, loc)
    size = regular_file_size(file, ModelError, "external data")
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", size - int(info.get("offset", 0))))
    except ValueError:
        raise ModelError(f"{where} with a non-numeric offset or length") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(f"{where} at offset {offset}, length {length}, beyond the file's {size} bytes")


# ------------------------------------------------------------------ 2. the protobuf
def _attr_types():
    from onnx import AttributeProto as A

    f, i, s, ints, floats, t = A.FLOAT, A.INT, A.STRING, A.INTS, A.FLOATS, A.TENSOR
    pool = {"auto_pad": s, "ceil_mode": i, "dilations": ints, "kernel_shape": ints, "pads": ints, "strides": ints}
    return {
        "Conv": {"auto_pad": s, "dilations": ints, "group": i, "kernel_shape": ints, "pads": ints, "strides": ints},
        "Gemm": {"alpha": f, "beta": f, "transA": i, "transB": i},
        "MatMul": {}, "Add": {}, "Relu": {}, "HardSwish": {}, "Sigmoid": {}, "Identity": {},
        "GlobalAveragePool": {},
        "Clip": {"min": f, "max": f}, "HardSigmoid": {"alpha": f, "beta": f}, "LeakyRelu": {"alpha": f},
        "MaxPool": {**pool, "storage_order": i}, "AveragePool": {**pool, "count_include_pad": i},
        "ReduceMean": {"axes": ints, "keepdims": i, "noop_with_empty_axes": i},
        "Flatten": {"axis": i}, "Reshape": {"allowzero": i},
        "BatchNormalization": {"epsilon": f, "momentum": f, "training_mode": i, "spatial": i, "is_test": i},
        "Dropout": {"ratio": f, "seed": i, "is_test": i},
        "Constant": {"value": t, "value_float": f, "value_floats": floats, "value_int": i, "value_ints": ints,
                     "value_string": s, "value_strings": A.STRINGS, "sparse_value": A.SPARSE_TENSOR},
        "Softmax": {"axis": i}, "LogSoftmax": {"axis": i},
        "Concat": {"axis": i}, "Mul": {}, "Transpose": {"perm": ints},
        # opset < 10 gives Slice's bounds as attributes, later opsets as inputs
        "Slice": {"axes": ints, "starts": ints, "ends": ints},
        "Split": {"axis": i, "split": ints, "num_outputs": i},
    }


# (fewest, most) inputs and outputs of each supported op; the first `fewest` inputs are required
_INPUTS = {"Conv": (2, 3), "Gemm": (2, 3), "MatMul": (2, 2), "Add": (2, 2), "Clip": (1, 3), "ReduceMean": (1, 2),
           "Reshape": (2, 2), "BatchNormalization": (5, 5), "Dropout": (1, 3), "Constant": (0, 0),
           "Concat": (1, MAX_NODES), "Mul": (2, 2), "Slice": (1, 5), "Split": (1, 2)}
_OUTPUTS = {"MaxPool": 2, "Dropout": 2, "BatchNormalization": 5, "Split": MAX_NODES}


def supported_ops() -> tuple:
    """The ONNX op types the importer reads."""
    from .ops import supported_onnx

    return supported_onnx()


def check_proto(proto, path: str) -> None:
    """Raise ModelError on the first structural problem of `proto` (see the module docstring)."""
    fail = _failer(path)
    _check_versions(proto, fail)
    g = proto.graph
    if len(g.node) > MAX_NODES or len(g.initializer) > MAX_NODES:
        fail(f"{len(g.node)} nodes and {len(g.initializer)} initializers; at most {MAX_NODES:,} of each")
    ops, types = supported_ops(), _attr_types()
    for n in g.node:
        if n.domain not in ("", "ai.onnx") or (n.op_type not in ops and not _plain_attributes(n)):
            op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            fail(f"unsupported op {op} in node {n.name!r}; supported ops: {', '.join(ops)}")
    inits = _check_names(g, fail)
    for t in g.initializer:
        _check_tensor(t, f"initializer {t.name!r}", fail)
    _check_order(g, inits, fail)
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value" and n.output:
            consts[n.output[0]] = n.attribute[0].t
    for n in g.node:
        if n.op_type in ops:
            _check_node(n, types[n.op_type], consts, fail)
        else:
            for attr in n.attribute:
                if attr.type == attr.TENSOR:
                    _check_tensor(attr.t, f"{n.op_type} node {n.name!r}'s {attr.name!r}", fail)
    _check_io(g, inits, fail)


def _plain_attributes(node) -> bool:
    """Whether an op edgetune does not train has only plain attributes (numbers, strings,
    tensors). Such ops may compute a Reshape target (Shape -> Gather -> Concat) that import folds
    into a constant and drops; the importer names any that stay. Subgraphs (If, Loop) and
    attributes of no valid type would reach onnx's shape inference, so they are refused here."""
    from onnx import AttributeProto as A

    plain = (A.FLOAT, A.INT, A.STRING, A.TENSOR, A.FLOATS, A.INTS, A.STRINGS)
    return all(a.type in plain for a in node.attribute)


def _failer(path: str) -> Callable[[str], None]:
    def fail(msg: str):
        raise ModelError(f"{path}: {msg}")
    return fail


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _check_versions(proto, fail) -> None:
    import onnx

    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if len(versions) != 1:
        fail(f"the model declares the ai.onnx opset {len(versions)} times; it must declare it once")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= versions[0] <= newest:
        fail(f"ai.onnx opset {versions[0]} is not supported (edgetune reads opsets {MIN_OPSET} to {newest})")
    if not 3 <= proto.ir_version <= onnx.IR_VERSION:
        fail(f"ONNX IR version {proto.ir_version} is not supported (3 to {onnx.IR_VERSION})")


def _check_names(g, fail) -> set:
    """Unique initializer, input, value and node names; returns the initializer names."""
    inits = set()
    for t in g.initializer:
        if not t.name or t.name in inits:
            fail(f"two initializers are named {t.name!r}" if t.name else "an initializer has no name")
        inits.add(t.name)
    inputs = [i.name for i in g.input]
    if len(set(inputs)) != len(inputs) or "" in inputs:
        fail("the graph's inputs have duplicate or empty names")
    made = set(inputs) | inits
    names = set()
    for n in g.node:
        if n.name and n.name in names:
            fail(f"two nodes are named {n.name!r}")
        names.add(n.name)
        for o in n.output:
            if o and o in made:
                fail(f"value {o!r} is produced twice (node {n.name!r} and an earlier node, input or initializer)")
            made.add(o)
    return inits


def _check_order(g, inits: set, fail) -> None:
    """Every input is produced before it is read: no cycle, no value from a deleted node."""
    later = {o: n for n in g.node for o in n.output if o}
    ready = {i.name for i in g.input} | inits
    for n in g.node:
        for x in n.input:
            if x and x not in ready:
                if x in later:
                    fail(f"node {n.name!r} reads {x!r} before node {later[x].name!r} produces it (a cycle, or nodes "
                         "out of topological order)")
                fail(f"node {n.name!r} reads {x!r}, which no node, input or initializer provides")
        ready.update(o for o in n.output if o)
    for o in g.output:
        if o.name not in ready:
            fail(f"the graph's output {o.name!r} is produced by no node")


def _check_tensor(t, where: str, fail) -> None:
    """Element type, dims and data length of a TensorProto (numpy_helper would reshape blindly)."""
    from onnx import TensorProto

    types = _tensor_types()
    if t.data_type not in types:
        fail(f"{where} has element type {_type_name(t.data_type)}, which edgetune does not read")
    dims = list(t.dims)
    if len(dims) > MAX_RANK or any(d < 0 or d > MAX_DIM for d in dims):
        fail(f"{where} has dims {tuple(dims)}; each must be 0 to {MAX_DIM:,} (at most {MAX_RANK} of them)")
    n = math.prod(dims)
    if n > MAX_TENSOR_ELEMS:
        fail(f"{where} has {n:,} elements; at most {MAX_TENSOR_ELEMS:,}")
    if t.HasField("segment"):
        fail(f"{where} is segmented, which edgetune does not read")
    if t.data_location == TensorProto.EXTERNAL:
        fail(f"{where} keeps its data outside the file")   # read_model loads external data first
    size, field = types[t.data_type]
    have = len(t.raw_data) // size if t.raw_data else len(getattr(t, field))
    if (t.raw_data and len(t.raw_data) != n * size) or have != n:
        fail(f"{where} declares dims {tuple(dims)} ({n:,} values) but holds {have:,}")


def _type_name(elem: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem).lower()
    except ValueError:
        return f"code {elem}"


def _check_node(n, types: dict, consts: dict, fail) -> None:
    """Input and output counts, then each attribute's type and range."""
    from onnx import AttributeProto, helper

    op, name = n.op_type, n.name
    lo, hi = _INPUTS.get(op, (1, 1))
    if not lo <= len(n.input) <= hi or any(not x for x in n.input[:lo]):
        fail(f"{op} node {name!r} has inputs {list(n.input)}; it needs {lo}" + (f" to {hi}" if hi > lo else ""))
    if not 1 <= len(n.output) <= _OUTPUTS.get(op, 1) or not n.output[0]:
        fail(f"{op} node {name!r} has outputs {list(n.output)}")
    a = {}
    for attr in n.attribute:
        want = types.get(attr.name)
        if want is None:
            fail(f"{op} node {name!r} has an unknown attribute {attr.name!r}")
        if attr.type != want:
            fail(f"{op} node {name!r}: attribute {attr.name!r} must be {_attr_name(want)}, "
                 f"not {_attr_name(attr.type)}")
        if attr.type == AttributeProto.TENSOR:
            _check_tensor(attr.t, f"{op} node {name!r}'s {attr.name!r}", fail)
        a[attr.name] = helper.get_attribute_value(attr)
    _RANGES.get(op, lambda *_: None)(n, a, consts, _node_failer(fail, op, name))


def _attr_name(code: int) -> str:
    from onnx import AttributeProto

    try:
        return AttributeProto.AttributeType.Name(code).lower()
    except ValueError:
        return f"type code {code}"


def _node_failer(fail, op, name):
    return lambda msg: fail(f"{op} node {name!r}: {msg}")


def _ints(fail, a: dict, key: str, count: int, lo: int, hi: int) -> None:
    v = a.get(key)
    if v is not None and (len(v) != count or any(not lo <= x <= hi for x in v)):
        fail(f"{key}={list(v)}: expected {count} values, each {lo} to {hi}")


def _choice(fail, a: dict, key: str, allowed) -> None:
    if key in a and a[key] not in allowed:
        fail(f"{key}={a[key]!r}: expected one of {', '.join(map(str, allowed))}")


def _finite(fail, a: dict, *keys) -> None:
    for key in keys:
        if key in a and not math.isfinite(a[key]):
            fail(f"{key}={a[key]}: expected a finite number")


def _spatial(n, a, consts, fail) -> None:
    _ints(fail, a, "kernel_shape", 2, 1, MAX_GEOMETRY)
    _ints(fail, a, "strides", 2, 1, MAX_GEOMETRY)
    _ints(fail, a, "dilations", 2, 1, MAX_GEOMETRY)
    _ints(fail, a, "pads", 4, 0, MAX_GEOMETRY - 1)
    pad = a.get("auto_pad", b"NOTSET")
    if (pad.decode("utf-8", "replace") if isinstance(pad, bytes) else pad) not in (
            "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        fail(f"auto_pad={pad!r}: expected NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    if n.op_type == "Conv":
        if "group" in a and not 1 <= a["group"] <= MAX_DIM:
            fail(f"group={a['group']}: expected 1 to {MAX_DIM:,}")
        w = consts.get(n.input[1])
        if w is not None and "kernel_shape" in a and list(w.dims[2:]) != list(a["kernel_shape"]):
            fail(f"kernel_shape={list(a['kernel_shape'])} differs from the weight's {list(w.dims[2:])}")
        return
    k = a.get("kernel_shape")
    if k is None:
        fail("kernel_shape is required")
    if "pads" in a and any(p >= k[i % 2] for i, p in enumerate(a["pads"])):
        fail(f"pads={list(a['pads'])} must be smaller than kernel_shape={list(k)}")
    for key in ("ceil_mode", "count_include_pad", "storage_order"):
        _choice(fail, a, key, (0, 1))


def _gemm(n, a, consts, fail) -> None:
    for key in ("transA", "transB"):
        _choice(fail, a, key, (0, 1))
    _finite(fail, a, "alpha", "beta")


def _clip(n, a, consts, fail) -> None:
    bounds = dict(a)
    for i, key in ((1, "min"), (2, "max")):
        if len(n.input) > i and n.input[i] in consts:
            t = consts[n.input[i]]
            if math.prod(t.dims) != 1:
                fail(f"its {key} bound {n.input[i]!r} has {math.prod(t.dims)} values; expected one")
            from onnx import numpy_helper

            bounds[key] = float(numpy_helper.to_array(t).reshape(-1)[0])
    for key in ("min", "max"):
        if key in bounds and math.isnan(bounds[key]):
            fail(f"its {key} bound is NaN")
    if bounds.get("min", -math.inf) > bounds.get("max", math.inf):
        fail(f"min {bounds['min']} is above max {bounds['max']}")


def _reshape(n, a, consts, fail) -> None:
    _choice(fail, a, "allowzero", (0, 1))
    t = consts.get(n.input[1])
    if t is None:
        return      # computed from Shape: onnx_batch rewrites it, or says why it cannot
    from onnx import TensorProto, numpy_helper

    if t.data_type != TensorProto.INT64 or len(t.dims) != 1 or t.dims[0] > MAX_RANK:
        fail(f"its shape {n.input[1]!r} must be a 1-D int64 tensor of at most {MAX_RANK} values")
    target = numpy_helper.to_array(t).tolist()
    if target.count(-1) > 1 or any(s < -1 or s > MAX_DIM for s in target):
        fail(f"target shape {target}: at most one -1, other values 0 to {MAX_DIM:,}")
    if a.get("allowzero") and 0 in target:
        fail(f"allowzero=1 with a 0 in the target shape {target} is not supported")


def _reduce_mean(n, a, consts, fail) -> None:
    _ints(fail, a, "axes", len(a.get("axes", ())), -MAX_RANK, MAX_RANK - 1)
    for key in ("keepdims", "noop_with_empty_axes"):
        _choice(fail, a, key, (0, 1))
    t = consts.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None
    from onnx import TensorProto

    if t is not None and (t.data_type != TensorProto.INT64 or len(t.dims) != 1 or t.dims[0] > MAX_RANK):
        fail(f"its axes {n.input[1]!r} must be a 1-D int64 tensor of at most {MAX_RANK} values")


def _batchnorm(n, a, consts, fail) -> None:
    _finite(fail, a, "epsilon", "momentum")
    if a.get("epsilon", 1e-5) < 0:
        fail(f"epsilon={a['epsilon']} is negative")
    _choice(fail, a, "training_mode", (0, 1))


def _axis(n, a, consts, fail) -> None:
    if "axis" in a and not -MAX_RANK <= a["axis"] < MAX_RANK:
        fail(f"axis={a['axis']} is out of range")


def _dropout(n, a, consts, fail) -> None:
    if "ratio" in a and not 0 <= a["ratio"] < 1:
        fail(f"ratio={a['ratio']}: expected 0 <= ratio < 1")


def _constant(n, a, consts, fail) -> None:
    if len(a) != 1:
        fail(f"has {len(a)} value attributes; expected exactly one")


def _act_alpha(n, a, consts, fail) -> None:
    _finite(fail, a, "alpha", "beta")


_RANGES = {"Conv": _spatial, "MaxPool": _spatial, "AveragePool": _spatial, "Gemm": _gemm, "Clip": _clip,
           "Reshape": _reshape, "ReduceMean": _reduce_mean, "BatchNormalization": _batchnorm,
           "Flatten": _axis, "Softmax": _axis, "LogSoftmax": _axis, "Dropout": _dropout, "Constant": _constant,
           "LeakyRelu": _act_alpha, "HardSigmoid": _act_alpha}


def _check_io(g, inits: set, fail) -> None:
    """Dims of the graph's inputs, outputs and recorded shapes: 0 to MAX_DIM, the data input's
    at least 1, and one sample of the data input at most MAX_SAMPLE_ELEMS values."""
    from onnx import TensorProto

    inputs = {id(i) for i in g.input}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.name in inits:
            continue
        data_input = id(v) in inputs
        elem = v.type.tensor_type.elem_type
        if data_input and elem != TensorProto.FLOAT:
            fail(f"input {v.name!r} has element type {_type_name(elem)}; only float32 models are supported")
        dims = v.type.tensor_type.shape.dim
        values = [d.dim_value for d in dims if d.HasField("dim_value")]
        low = 1 if data_input else 0
        if len(dims) > MAX_RANK or any(not low <= d <= MAX_DIM for d in values):
            what = "input" if data_input else "value"
            fail(f"{what} {v.name!r} has dims ({_fmt_dims(dims)}); each must be {low} to {MAX_DIM:,}")
        if data_input and math.prod(values[1:] if len(values) == len(dims) else values) > MAX_SAMPLE_ELEMS:
            fail(f"input {v.name!r} has dims ({_fmt_dims(dims)}): more than {MAX_SAMPLE_ELEMS:,} values per sample")


def _fmt_dims(dims) -> str:
    return ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


# ------------------------------------------------------------------ 3. the imported graph
Shape = Optional[Tuple[int, ...]]


def check_ir(model) -> None:
    """Raise ModelError unless `model`'s node names are unique, its parameters finite, and every
    node's operands fit (with the memory of one sample's forward pass bounded)."""
    fail = _failer(model.source)
    names = [n.name for n in model.nodes]
    if len(set(names)) != len(names):
        dup = next(x for x in names if names.count(x) > 1)
        fail(f"two nodes are named {dup!r}")
    for name, arr in model.params.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            fail(f"initializer {name!r} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}; a model with "
                 "non-finite weights cannot be trained or exported")
    # batch 1; a symbolic dimension besides the batch (a fully convolutional export) leaves the
    # walk without shapes: the data then decides them, within the data limits
    dims = model.input_shape[1:]
    first = None if None in dims else (1,) + tuple(dims)
    shapes: Dict[str, Shape] = {model.input_name: first}
    total = math.prod(first or ())
    for node in model.nodes:
        xs = [shapes.get(i) for i in node.inputs]
        rule = SHAPE_RULES.get(node.op)
        out = None
        if rule is not None and all(x is not None for x in xs):
            out = rule(node, xs, {r: model.params[v].shape for r, v in node.params.items()},
                       _node_failer(fail, node.onnx_op, node.name), model.params)
        shapes[node.output] = out
        if out is not None:
            total += math.prod(out)
            if total > MAX_SAMPLE_ELEMS:
                fail(f"one sample's forward pass would hold more than {MAX_SAMPLE_ELEMS:,} values (node "
                     f"{node.name!r} outputs {_fmt(out)})")
    out = shapes.get(model.output_name)
    if out is not None and len(out) != 2:
        fail(f"the output {model.output_name!r} has shape {_fmt((None,) + out[1:])}; edgetune trains classifiers "
             "whose output is (N, classes)")


def _fmt(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _rank(fail, x, want, what="input") -> None:
    if len(x) not in want:
        fail(f"its {what} has shape {_fmt(x)}; expected rank {' or '.join(map(str, want))}")


def _conv_shape(node, xs, p, fail, params):
    x, (k, cg, r, s) = xs[0], p["W"]
    at = node.attrs
    _rank(fail, x, (4,))
    g = at["group"]
    if k % g or x[1] != cg * g:
        fail(f"{x[1]} input channels and weights {p['W']} with group={g} do not fit (needs {cg * g} input channels "
             f"and out channels divisible by {g})")
    if "B" in p and p["B"] != (k,):
        fail(f"bias of shape {p['B']}; expected ({k},)")
    out = []
    for size, kk, st, d, p0, p1 in zip(x[2:], (r, s), at["stride"], at["dilation"], at["pads"][:2], at["pads"][2:]):
        span = size + p0 + p1 - d * (kk - 1) - 1
        if span < 0:
            fail(f"its input {_fmt(x)} is smaller than the (dilated) kernel {r}x{s}")
        out.append(span // st + 1)
    return (x[0], k) + tuple(out)


def _gemm_shape(node, xs, p, fail, params):
    x, w = xs[0], p["W"]
    _rank(fail, x, (2,))
    fin, fout = (w[1], w[0]) if node.attrs["transB"] else w
    if x[1] != fin:
        fail(f"its input has {x[1]} features, the weights {w} expect {fin}")
    if "B" in p and p["B"] != (fout,):
        fail(f"bias of shape {p['B']}; expected ({fout},)")
    return (x[0], fout)


def _broadcast_into(fail, x, b, what):
    try:
        got = np.broadcast_shapes(x, b)
    except ValueError:
        got = None
    if got != tuple(x):
        fail(f"{what} of shape {_fmt(b)} does not broadcast onto its input {_fmt(x)}")
    return tuple(x)


def _add_param_shape(node, xs, p, fail, params):
    return _broadcast_into(fail, xs[0], p["B"], "the constant")


def _add_shape(node, xs, p, fail, params):
    if xs[0] != xs[1]:
        fail(f"adds values of shapes {_fmt(xs[0])} and {_fmt(xs[1])}; only equal shapes are supported")
    return xs[0]


def _same_shape(node, xs, p, fail, params):
    return xs[0]


def _pool_shape(node, xs, p, fail, params):
    x, at = xs[0], node.attrs
    _rank(fail, x, (4,))
    out = []
    for size, kk, st, p0, p1 in zip(x[2:], at["kernel"], at["stride"], at["pads"][:2], at["pads"][2:]):
        span = size + p0 + p1 - kk
        if span < 0:
            fail(f"its window {at['kernel']} is larger than the padded input {_fmt(x)}")
        o = (-(-span // st) if at["ceil_mode"] else span // st) + 1
        if at["ceil_mode"] and (o - 1) * st >= size + p0:
            o -= 1
        out.append(o)
    return x[:2] + tuple(out)


def _global_pool_shape(node, xs, p, fail, params):
    _rank(fail, xs[0], (4,))
    return xs[0][:2] + ((1, 1) if node.attrs["keepdims"] else ())


def _flatten_shape(node, xs, p, fail, params):
    _rank(fail, xs[0], (2, 3, 4, 5, 6, 7, 8))
    return (xs[0][0], math.prod(xs[0][1:]))


def _reshape_shape(node, xs, p, fail, params):
    x, target = xs[0], list(node.attrs["shape"])
    out = [x[i] if s == 0 and i < len(x) else s for i, s in enumerate(target)]
    if any(s == 0 for s in target[len(x):]) or target.count(-1) > 1 or any(s < -1 for s in out):
        fail(f"target shape {tuple(target)} does not fit its input {_fmt(x)}")
    n, known = math.prod(x), math.prod(s for s in out if s != -1)
    if -1 in out:
        if known == 0 or n % known:
            fail(f"cannot reshape {_fmt(x)} into {tuple(target)}")
        out[out.index(-1)] = n // known
    if math.prod(out) != n:
        fail(f"cannot reshape {_fmt(x)} ({n} values) into {tuple(target)}")
    return tuple(out)


def _batchnorm_shape(node, xs, p, fail, params):
    x = xs[0]
    _rank(fail, x, (2, 3, 4))
    for role, shape in p.items():
        if shape != (x[1],):
            fail(f"its {role} has shape {shape}; the input has {x[1]} channels")
    var = params[node.params["var"]].astype(np.float64) + node.attrs["epsilon"]
    if not (var > 0).all():
        fail("variance + epsilon is not positive for every channel")
    return x


SHAPE_RULES: Dict[str, Callable] = {
    "conv": _conv_shape, "gemm": _gemm_shape, "add_param": _add_param_shape, "add": _add_shape,
    "relu": _same_shape, "clip": _same_shape, "hardswish": _same_shape, "hardsigmoid": _same_shape,
    "leakyrelu": _same_shape, "sigmoid": _same_shape, "maxpool": _pool_shape, "avgpool": _pool_shape,
    "globalavgpool": _global_pool_shape, "flatten": _flatten_shape, "reshape": _reshape_shape,
    "batchnorm": _batchnorm_shape,
}
