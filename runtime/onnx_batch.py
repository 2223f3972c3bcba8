"""Normalise an exported ONNX graph before import, so any batch size trains and exports.

torch's most common export uses a batch-1 dummy input without `dynamic_axes`: the
input, the output and every Reshape target then carry that batch as a constant.
Other exports compute Reshape targets with Shape -> Gather -> Concat chains, or pad
with `auto_pad=SAME_*`. This pass rewrites all of them into one form the engines and
the exported file share (README, "Your model"):

* the batch dimension of the input and output becomes symbolic (`N`);
* every Reshape gets a constant target `(-1, d1, d2, ...)` (the batch stays in dim 0),
  taken from ONNX shape inference; a Reshape that folds the batch into other
  dimensions cannot be rewritten and is an error that says how to re-export;
* `auto_pad` SAME_UPPER / SAME_LOWER / VALID becomes explicit `pads`;
* Constant nodes become initializers and Identity of an initializer is bypassed, so
  every trained tensor is an initializer the export can replace;
* integer arithmetic on shapes (Shape -> Gather -> Div -> Slice bounds, as TorchScript writes
  `chunk`) whose value does not depend on the batch is folded into initializers;
* nodes and initializers nothing reads any more are dropped.

The caller gets the rewritten copy and a list of human-readable notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .errors import ModelError

BATCH_PARAM = "N"
REEXPORT_HINT = ("re-export it with a dynamic batch: torch.onnx.export(model, x, path, "
                 "dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}}), or with dynamo=True "
                 "and dynamic_shapes=({0: torch.export.Dim('batch')},)")
_PAD_OPS = ("Conv", "MaxPool", "AveragePool")


@dataclass
class Normalised:
    """The rewritten model, what was changed, and the batch size the file was exported with."""

    proto: object
    notes: List[str] = field(default_factory=list)
    export_batch: Optional[int] = None


def normalise(proto, path: str) -> Normalised:
    """Return a rewritten copy of `proto` (see the module docstring); the original is untouched."""
    import onnx

    work = onnx.ModelProto()
    work.CopyFrom(proto)
    g = work.graph
    out = Normalised(work)
    _constants_to_initializers(g)
    inits = {i.name for i in g.initializer}
    data_inputs = [i for i in g.input if i.name not in inits]
    if len(data_inputs) != 1 or not data_inputs[0].type.tensor_type.HasField("shape"):
        return out                                  # the importer reports what is wrong
    inp = data_inputs[0]
    dims = list(inp.type.tensor_type.shape.dim)
    if not dims:
        return out
    fixed = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    out.export_batch = fixed
    static = all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:])
    if static and any(n.op_type == "Shape" for n in g.node):
        _fold_shape_arithmetic(work, inp.name, fixed, path, out.notes)
    needs_shapes = fixed is not None or any(n.op_type == "Reshape" for n in g.node) or any(
        _auto_pad(n) not in ("NOTSET", "") for n in g.node if n.op_type in _PAD_OPS)
    if needs_shapes:
        if not static:
            raise ModelError(f"{path}: input {inp.name!r} has symbolic dimensions besides the batch "
                             f"({_fmt_dims(dims)}); re-export it with a fixed sample shape")
        probe = fixed or 3
        shapes = _infer(work, inp.name, probe, path)
        _rewrite_reshapes(g, shapes, probe, fixed, path, out.notes)
        _rewrite_auto_pad(g, shapes, path, out.notes)
        _check_batch_constants(g, shapes, probe, fixed, path)
    _make_batch_symbolic(g, inp, out.notes, fixed)
    _drop_dead(g)
    if needs_shapes and static:
        _check_symbolic(work, inp.name, path, fixed)
    return out


# -- helpers -------------------------------------------------------------------------------
def _fmt_dims(dims) -> str:
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                           for d in dims) + ")"


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _auto_pad(node) -> str:
    v = _attr(node, "auto_pad", b"NOTSET")
    return v.decode() if isinstance(v, bytes) else str(v)


def _set_attr(node, name, value) -> None:
    from onnx import helper

    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


def _constants_to_initializers(g) -> None:
    """Constant nodes -> initializers; Identity(initializer) -> readers use the initializer."""
    from onnx import numpy_helper

    keep = []
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1:
            value = _constant_value(n)
            if value is not None:
                g.initializer.append(numpy_helper.from_array(value, n.output[0]))
                continue
        keep.append(n)
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    rename: Dict[str, str] = {}
    final = []
    for n in keep:
        src = rename.get(n.input[0], n.input[0]) if n.input else None
        if n.op_type == "Identity" and src in inits and n.output[0] not in outputs:
            rename[n.output[0]] = src
            continue
        final.append(n)
    for n in final:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    del g.node[:]
    g.node.extend(final)


def _constant_value(node) -> Optional[np.ndarray]:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), np.float32)
        if a.name == "value_int":
            return np.array(a.i, np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), np.int64)
    return None


# ops of the shape arithmetic the exporters write, evaluated on constants by _fold_shape_arithmetic
_FOLD = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Div", "Mul", "Add", "Sub", "Concat", "Slice",
         "Identity")


def _fold_shape_arithmetic(proto, input_name: str, fixed, path: str, notes) -> None:
    """Fold every integer value computed from shapes and constants alone whose value is the same
    for two batch sizes (a value that follows the batch is a Reshape target: _rewrite_reshapes)."""
    from onnx import numpy_helper

    g = proto.graph
    probes = (fixed or 3, 5 if fixed != 5 else 7)
    shapes = [_infer(proto, input_name, b, path) for b in probes]
    known = [{i.name: numpy_helper.to_array(i) for i in g.initializer} for _ in probes]
    inits = {i.name for i in g.initializer}
    keep, folded = [], 0
    for n in g.node:
        values = None
        if n.op_type in _FOLD and n.domain in ("", "ai.onnx") and len(n.output) == 1:
            try:
                values = [_eval_shape_op(n, k, sh) for k, sh in zip(known, shapes)]
            except (KeyError, ValueError, IndexError, TypeError):
                values = None
        if values is None or values[0] is None:
            keep.append(n)
            continue
        for k, v in zip(known, values):
            k[n.output[0]] = v
        if np.issubdtype(values[0].dtype, np.integer) and all(
                v.shape == values[0].shape and np.array_equal(v, values[0]) for v in values[1:]):
            if n.output[0] not in inits:
                g.initializer.append(numpy_helper.from_array(values[0], n.output[0]))
                inits.add(n.output[0])
            folded += 1
            continue
        keep.append(n)       # follows the batch (or is not integer): left to the rewrites below
    if folded:
        del g.node[:]
        g.node.extend(keep)
        notes.append(f"{folded} nodes of constant shape arithmetic (Shape, Gather, Div, ...) folded into constants")


def _eval_shape_op(n, known, shapes):
    """The value of node `n` from constant inputs (None when an input is not known)."""
    from onnx import helper

    op = n.op_type
    if op == "Shape":
        if n.input[0] not in shapes:
            return None
        dims = shapes[n.input[0]]
        start, end = _attr(n, "start", 0), _attr(n, "end", len(dims))
        return np.array(dims[start:end], np.int64)
    ins = [known[i] if i else None for i in n.input]
    if any(v is None for v, name in zip(ins, n.input) if name):
        return None
    x = ins[0]
    if op == "Identity":
        return x
    if op == "Gather":
        return np.take(x, ins[1], axis=_attr(n, "axis", 0))
    if op in ("Unsqueeze", "Squeeze"):
        axes = ins[1].tolist() if len(ins) > 1 and ins[1] is not None else _attr(n, "axes", None)
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))
        rank = x.ndim + len(axes)
        for a in sorted(int(a) % rank for a in axes):
            x = np.expand_dims(x, a)
        return x
    if op == "Cast":
        return x.astype(helper.tensor_dtype_to_np_dtype(_attr(n, "to")))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in ins], axis=_attr(n, "axis", 0))
    if op == "Slice":
        starts, ends = ins[1], ins[2]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64)
        sl = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist()):
            sl[int(a)] = slice(int(s), int(e), int(st))
        return x[tuple(sl)]
    a, b = ins[0], ins[1]
    if op == "Div":
        if np.issubdtype(a.dtype, np.integer):   # ONNX integer division truncates toward zero
            q = np.abs(a) // np.abs(b)
            return (np.sign(a) * np.sign(b) * q).astype(a.dtype)
        return a / b
    return {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract}[op](a, b)


def _infer(proto, input_name: str, batch: int, path: str) -> Dict[str, tuple]:
    """Static shapes of every value with the input batch set to `batch` (ONNX shape inference)."""
    import onnx
    from onnx import shape_inference

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    for i in probe.graph.input:
        if i.name == input_name:
            d = i.type.tensor_type.shape.dim[0]
            d.Clear()
            d.dim_value = batch
    del probe.graph.value_info[:]
    for o in probe.graph.output:
        o.type.tensor_type.ClearField("shape")
    try:
        done = shape_inference.infer_shapes(probe, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        _fail_on_unsupported(proto.graph, path)   # the likelier cause, and the one to name
        raise ModelError(f"{path}: ONNX shape inference failed ({str(exc).splitlines()[0][:200]})") from None
    shapes: Dict[str, tuple] = {}
    for v in list(done.graph.input) + list(done.graph.value_info) + list(done.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
            if all(d is not None for d in dims):
                shapes[v.name] = dims
    for init in done.graph.initializer:
        shapes.setdefault(init.name, tuple(init.dims))
    return shapes


def _rewrite_reshapes(g, shapes, probe, fixed, path, notes) -> None:
    """Every Reshape keeps the batch in dim 0: its target becomes constant (-1, rest...)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type != "Reshape":
            continue
        name = n.name or n.output[0]
        src, dst = shapes.get(n.input[0]), shapes.get(n.output[0])
        if src is None or dst is None:
            _fail_on_unsupported(g, path)      # the likelier cause, and the one to name
            raise ModelError(f"{path}: Reshape node {name!r}: cannot work out its shapes; "
                             f"{REEXPORT_HINT}")
        if not dst or dst[0] != probe or src[0] != probe or int(np.prod(src[1:])) != int(np.prod(dst[1:])):
            batch = f"batch {fixed}" if fixed else "a symbolic batch"
            raise ModelError(f"{path}: Reshape node {name!r} mixes the batch dimension with the others "
                             f"({_fmt(src)} -> {_fmt(dst)} with {batch}), so the model only runs with the "
                             f"batch size it was exported with; {REEXPORT_HINT}, and flatten with "
                             "x.flatten(1) or x.view(x.size(0), -1)")
        target = np.array((-1,) + tuple(dst[1:]), np.int64)
        old = inits.get(n.input[1])
        old_value = numpy_helper.to_array(old) if old is not None else None
        if old_value is not None and np.array_equal(old_value, target):
            continue
        new_name = _unique(f"{name}/edgetune_shape", inits)
        init = numpy_helper.from_array(target, new_name)
        g.initializer.append(init)
        inits[new_name] = init
        n.input[1] = new_name
        before = _fmt(tuple(old_value.tolist())) if old_value is not None else "computed from Shape"
        notes.append(f"Reshape {name!r}: target {before} -> {_fmt(tuple(target.tolist()))}")


def _fail_on_unsupported(g, path) -> None:
    """A ModelError naming the first node whose op the importer does not take, if there is one."""
    from .ops import supported_onnx

    known = set(supported_onnx()) | set(_FOLD)   # shape arithmetic is folded or reported by the rewrites
    for n in g.node:
        if n.op_type not in known or n.domain not in ("", "ai.onnx"):
            op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            raise ModelError(f"{path}: unsupported op {op} in node {n.name!r}; supported ops: "
                             f"{', '.join(supported_onnx())}")


def _rewrite_auto_pad(g, shapes, path, notes) -> None:
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type not in _PAD_OPS:
            continue
        mode = _auto_pad(n)
        if mode in ("NOTSET", ""):
            continue
        name = n.name or n.output[0]
        src = shapes.get(n.input[0])
        if src is None or len(src) != 4:
            raise ModelError(f"{path}: {n.op_type} node {name!r}: auto_pad={mode} needs a known 2-D input shape")
        if n.op_type == "Conv":
            w = inits.get(n.input[1])
            kernel = tuple(_attr(n, "kernel_shape", None) or (tuple(w.dims[2:]) if w is not None else ()))
        else:
            kernel = tuple(_attr(n, "kernel_shape"))
        strides = tuple(_attr(n, "strides", None) or (1, 1))
        dil = tuple(_attr(n, "dilations", None) or (1, 1))
        if mode not in ("VALID", "SAME_UPPER", "SAME_LOWER"):
            raise ModelError(f"{path}: {n.op_type} node {name!r}: auto_pad={mode} is not an ONNX mode "
                             "(VALID, SAME_UPPER, SAME_LOWER)")
        pads = same_pads(src[2:], kernel, strides, dil, mode)
        _set_attr(n, "auto_pad", None)
        _set_attr(n, "pads", list(pads))
        notes.append(f"{n.op_type} {name!r}: auto_pad={mode} -> pads {tuple(pads)}")


def same_pads(spatial, kernel, strides, dilations, mode: str) -> tuple:
    """ONNX auto_pad as explicit pads (top, left, bottom, right) for a 2-D input."""
    if mode == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return tuple(begin + end)


def _check_batch_constants(g, shapes, probe, fixed, path) -> None:
    """A constant operand whose first dimension is the export batch (> 1) ties the model to it."""
    if not fixed or fixed == 1:
        return
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    for n in g.node:
        if n.op_type not in ("Add", "Sub", "Mul", "Div"):
            continue
        for a, b in ((0, 1), (1, 0)):
            const, other = inits.get(n.input[a]), shapes.get(n.input[b])
            if const and other and n.input[b] not in inits and len(const) == len(other) and const[0] == fixed:
                raise ModelError(f"{path}: {n.op_type} node {n.name or n.output[0]!r} adds a constant of shape "
                                 f"{_fmt(const)} whose first dimension is the export batch {fixed}; "
                                 f"{REEXPORT_HINT}")


def _make_batch_symbolic(g, inp, notes, fixed) -> None:
    d0 = inp.type.tensor_type.shape.dim[0]
    param = d0.dim_param if d0.HasField("dim_param") and d0.dim_param else BATCH_PARAM
    if fixed is not None:
        d0.Clear()
        d0.dim_param = param
        notes.insert(0, f"input {inp.name!r}: batch fixed at {fixed} in the file -> symbolic ({param})")
    for o in g.output:
        t = o.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) and t.shape.dim[0].HasField("dim_value"):
            t.shape.dim[0].Clear()
            t.shape.dim[0].dim_param = param
    del g.value_info[:]      # intermediate shapes were recorded with the export batch


def _drop_dead(g) -> None:
    """Remove nodes whose outputs nothing reads, then initializers nothing reads."""
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output if o):
            keep.append(n)
            live.update(i for i in n.input if i)
    keep.reverse()
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
    listed = {i.name for i in g.input}
    used = [i for i in g.initializer if i.name in live or i.name in listed]
    if len(used) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(used)


def _check_symbolic(proto, input_name, path, fixed) -> None:
    """After the rewrite, another batch size must flow through to the output."""
    other = 5 if fixed != 5 else 7
    shapes = _infer(proto, input_name, other, path)
    for o in proto.graph.output:
        got = shapes.get(o.name)
        if got is not None and (not got or got[0] != other):
            raise ModelError(f"{path}: output {o.name!r} keeps a fixed batch ({_fmt(got)} for input batch "
                             f"{other}); {REEXPORT_HINT}")


def _unique(base: str, taken) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if shape is not None else "(unknown)"
