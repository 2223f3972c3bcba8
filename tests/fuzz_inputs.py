"""Hostile inputs for the fuzz tests (tests/test_fuzz_models.py, tests/test_fuzz_data.py): mutations
of the bundled ONNX models, of .npz data and of image folders, the runs of the CLI on them, and
the verdict on each run.

A mutation is a plain tuple drawn by hypothesis (kind, then integers) and applied by `mutate_*`,
so one draw means the same damage to any base file and a failing case prints as data.

A run is acceptable when it ends in success (exit 0; stderr only `warning:` lines) or in one
clean error (exit 1 or 2; `warning:` lines then exactly one `error:` line, never "internal
error"), with no traceback, no signal, within RUN_TIMEOUT seconds and below MAX_RSS bytes.
In-process runs (click's CliRunner) also fail on a RuntimeWarning or a Pillow warning; subprocess
runs see a segfault, a hang and the memory peak.

`python tests/fuzz_inputs.py table LOG` prints the table of a run log (EDGETUNE_FUZZ_LOG=LOG).
"""
from __future__ import annotations

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

RUN_TIMEOUT = 120.0          # seconds: "within seconds" on an idle machine, with room for a loaded CI runner
MAX_RSS = 2 << 30            # the memory peak any run may reach
_AS_LIMIT = 16 << 30         # address space cap of a child: a guard for the machine, not the verdict

# integers that break code which trusts a file: signs, zero, off-by-one, int32/int64 edges
ABSURD = (-5, -1, 0, 1, 2, 3, 7, 99, 10**9, 2**31 - 1, 2**31, 2**63 - 1, -2**63)
FLOATS = (float("nan"), float("inf"), float("-inf"), 3e38, 1e30, -1e7, 0.0)

MODEL_BASES = ("digits_mlp", "digits_cnn", "bench_mobilenet_relu6", "bench_cnn_hardswish", "bench_resnet_relu",
               "bench_vgg_relu")
MODEL_KINDS = ("flip", "truncate", "delete_node", "delete_init", "attr_int", "attr_type", "attr_drop",
               "attr_unknown", "input_dim", "init_dims", "init_dtype", "input_dtype", "cycle", "dup_output",
               "dup_init", "dup_node_name", "opset", "ir_version", "nan_weight", "insert_bn", "insert_reshape",
               "swap_nodes", "second_output", "graph_output")


def fuzz_profile() -> str:
    """The hypothesis profile in use (tests/conftest.py's rule)."""
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return os.environ.get("HYPOTHESIS_PROFILE", "ci" if ci else "dev")


# ----------------------------------------------------------------------------- models
def mutate_model(data: bytes, mutations) -> bytes:
    """Apply each (kind, a, b, c) of `mutations` in turn to the serialized model `data`."""
    import onnx

    for kind, a, b, c in mutations:
        if kind == "flip":
            buf = bytearray(data)
            for i in range(1 + c % 8):
                buf[(a + i * (b + 1) * 7919) % len(buf)] ^= 1 << ((b + i) % 8)
            data = bytes(buf)
        elif kind == "truncate":
            data = data[:a % max(len(data), 1)]
        else:
            proto = onnx.ModelProto()
            try:
                proto.ParseFromString(data)
            except Exception:  # noqa: BLE001 - an earlier flip broke it: nothing to restructure
                continue
            _mutate_proto(proto, kind, a, b, c)
            data = proto.SerializeToString()
    return data


def _pick(seq, i):
    return seq[i % len(seq)] if len(seq) else None


def _mutate_proto(proto, kind, a, b, c) -> None:
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    g = proto.graph
    nodes, inits = g.node, g.initializer
    value = ABSURD[c % len(ABSURD)]
    if kind == "delete_node" and len(nodes):
        del nodes[a % len(nodes)]
    elif kind == "delete_init" and len(inits):
        del inits[a % len(inits)]
    elif kind in ("attr_int", "attr_type", "attr_drop") and any(n.attribute for n in nodes):
        with_attrs = [n for n in nodes if n.attribute]
        node = _pick(with_attrs, a)
        attr = _pick(node.attribute, b)
        if kind == "attr_drop":
            node.attribute.remove(attr)
        elif kind == "attr_type":
            attr.type = (AttributeProto.FLOAT, AttributeProto.INTS, AttributeProto.STRING, AttributeProto.TENSOR,
                         AttributeProto.UNDEFINED, AttributeProto.GRAPH)[c % 6]
        elif attr.type == AttributeProto.INTS and len(attr.ints):
            attr.ints[b % len(attr.ints)] = max(min(value, 2**63 - 1), -2**63)
        elif attr.type == AttributeProto.INT:
            attr.i = max(min(value, 2**63 - 1), -2**63)
        elif attr.type == AttributeProto.FLOAT:
            attr.f = FLOATS[c % len(FLOATS)]
    elif kind == "attr_unknown" and len(nodes):
        _pick(nodes, a).attribute.append(helper.make_attribute(("kernel_shape", "strides", "pads", "group", "axis",
                                                               "bogus")[b % 6], [value % 2**31] * (1 + c % 4)))
    elif kind == "input_dim" and len(g.input):
        dims = g.input[0].type.tensor_type.shape.dim
        if len(dims):
            d = dims[b % len(dims)]
            d.Clear()
            d.dim_value = max(min(value, 2**63 - 1), -2**63)
    elif kind == "init_dims" and len(inits):
        t = _pick(inits, a)
        if len(t.dims):
            t.dims[b % len(t.dims)] = max(min(value, 2**63 - 1), -2**63)
    elif kind == "init_dtype" and len(inits):
        _pick(inits, a).data_type = (TensorProto.INT8, TensorProto.DOUBLE, TensorProto.STRING, 0, 999,
                                     TensorProto.FLOAT16, TensorProto.INT64, TensorProto.COMPLEX64)[c % 8]
    elif kind == "input_dtype" and len(g.input):
        g.input[0].type.tensor_type.elem_type = (TensorProto.INT8, TensorProto.DOUBLE, 0, 77)[c % 4]
    elif kind == "cycle" and len(nodes) > 1:
        i, j = sorted((a % len(nodes), b % len(nodes)))
        src = nodes[i]
        if len(src.input):
            src.input[0] = nodes[j].output[0]          # reads a later (or its own) output
    elif kind == "dup_output" and len(nodes) > 1:
        nodes[a % len(nodes)].output[0] = nodes[b % len(nodes)].output[0]
    elif kind == "dup_init" and len(inits):
        copy = inits.add()
        copy.CopyFrom(_pick(inits, a))
    elif kind == "dup_node_name" and len(nodes) > 1:
        nodes[a % len(nodes)].name = nodes[b % len(nodes)].name
    elif kind == "opset":
        for o in proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = (0, 1, 6, 7, 99, 10**6, 21, 28)[c % 8]
    elif kind == "ir_version":
        proto.ir_version = (0, 1, 3, 100, 2**40)[c % 5]
    elif kind == "nan_weight" and len(inits):
        t = _pick(inits, a)
        if t.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(t).copy()
            if arr.size:
                arr.reshape(-1)[b % arr.size] = FLOATS[c % len(FLOATS)]
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
    elif kind == "insert_bn" and len(nodes):
        node = _pick(nodes, a)
        size = (1, 3, 7, 16, 512)[b % 5]
        names = [f"fuzz_bn_{r}" for r in ("s", "b", "m", "v")]
        for n in names:
            inits.append(numpy_helper.from_array(np.ones(size, np.float32), n))
        out = node.output[0]
        node.output[0] = out + "_pre_bn"
        nodes.insert(a % len(nodes) + 1, helper.make_node("BatchNormalization", [out + "_pre_bn"] + names, [out],
                                                          name="fuzz_bn"))
    elif kind == "insert_reshape" and len(nodes):
        node = _pick(nodes, a)
        shape = [(-1, 128, 1, 1), (1, -1), (0, -1), (-1, -1), (value % 2**31, -1), (2, 3, 4)][b % 6]
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), "fuzz_shape"))
        out = node.output[0]
        node.output[0] = out + "_pre_reshape"
        nodes.insert(a % len(nodes) + 1, helper.make_node("Reshape", [out + "_pre_reshape", "fuzz_shape"], [out],
                                                          name="fuzz_reshape"))
    elif kind == "swap_nodes" and len(nodes) > 1:
        i, j = a % len(nodes), b % len(nodes)
        ni, nj = type(nodes[i])(), type(nodes[j])()
        ni.CopyFrom(nodes[i])
        nj.CopyFrom(nodes[j])
        nodes[i].CopyFrom(nj)
        nodes[j].CopyFrom(ni)
    elif kind == "second_output" and len(nodes):
        g.output.append(helper.make_tensor_value_info(_pick(nodes, a).output[0], TensorProto.FLOAT, None))
    elif kind == "graph_output" and len(g.output):
        g.output[0].name = (nodes[a % len(nodes)].output[0] if len(nodes) else "nothing") if b % 2 else "nothing"


def model_mutations():
    """hypothesis strategy: (base model, 1 to 3 mutations)."""
    from hypothesis import strategies as st

    one = st.tuples(st.sampled_from(MODEL_KINDS), st.integers(0, 2**20), st.integers(0, 2**20),
                    st.integers(0, 2**10))
    return st.tuples(st.sampled_from(MODEL_BASES), st.lists(one, min_size=1, max_size=3))


# ----------------------------------------------------------------------------- data
DATA_KINDS = ("x_dtype", "y_dtype", "y_value", "x_value", "x_shape", "y_shape", "drop_key", "classes", "header",
              "flip", "truncate", "bomb", "not_a_file", "npy_file")
X_DTYPES = ("uint8", "int32", "float16", "float64", "bool", "complex64", "uint16", "datetime64[s]", "U3")
Y_DTYPES = ("float32", "uint64", "int8", "bool", "datetime64[D]", "U2", "complex64")
LABELS = (-1, 10, 12, 10**9, 2**63 - 1, 2**64 - 1)


def base_arrays(n_train=64, n_val=32) -> dict:
    """A small slice of the bundled digits_shifted (digits_cnn's data)."""
    from edgetune import models

    d = models.load_dataset("digits_shifted")
    return {"x": d["x"][:n_train], "y": d["y"][:n_train], "x_val": d["x_val"][:n_val], "y_val": d["y_val"][:n_val]}


def write_data(path: Path, mutations, bomb: Optional[Path] = None) -> Path:
    """The data file (or other path) for `mutations` applied to base_arrays(); returns its path."""
    arrays = base_arrays()
    for kind, a, b, c in mutations:
        if kind in DATA_KINDS[:8]:
            _mutate_arrays(arrays, kind, a, b, c)
    header = [m for m in mutations if m[0] == "header"]
    _save_npz(path, arrays, _bad_npy(*header[0][1:]) if header else None)
    for kind, a, b, c in mutations:        # bytes first, then what replaces the file
        data = path.read_bytes()
        if kind == "flip" and data:
            buf = bytearray(data)
            for i in range(1 + c % 16):
                buf[(a + i * 104729 * (b + 1)) % len(buf)] ^= 1 << ((b + i) % 8)
            path.write_bytes(bytes(buf))
        elif kind == "truncate" and data:
            path.write_bytes(data[:a % len(data)])
    for kind, a, b, c in mutations:
        if kind in ("bomb", "npy_file", "not_a_file"):
            _replace(path, kind, c, arrays, bomb)
    return path


def _replace(path: Path, kind: str, c: int, arrays: dict, bomb: Optional[Path]) -> None:
    """`path` becomes the zip bomb, a plain .npy, a FIFO, /dev/zero, an empty file or a folder."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "bomb" and bomb is not None:
        path.symlink_to(bomb)
    elif kind == "npy_file":
        with open(path, "wb") as f:
            np.save(f, np.asarray(arrays.get("x", np.zeros(3))), allow_pickle=False)
    elif kind == "not_a_file":
        [lambda: os.mkfifo(path), lambda: path.symlink_to("/dev/zero"), lambda: path.write_bytes(b""),
         path.mkdir][c % 4]()
    else:
        path.write_bytes(b"")


def _mutate_arrays(arrays, kind, a, b, c) -> None:
    try:
        _mutate_arrays_or_raise(arrays, kind, a, b, c)
    except (TypeError, ValueError, IndexError):    # numpy refuses it (an earlier mutation made x 0-d): a no-op
        pass


def _mutate_arrays_or_raise(arrays, kind, a, b, c) -> None:
    key = ("x", "x_val")[a % 2]
    ykey = ("y", "y_val")[a % 2]
    if kind == "x_dtype" and key in arrays:
        dt = X_DTYPES[c % len(X_DTYPES)]
        arrays[key] = (arrays[key] * 255).astype(dt) if dt[0] in "iub" else arrays[key].astype(dt)
    elif kind == "y_dtype" and ykey in arrays:
        arrays[ykey] = arrays[ykey].astype(Y_DTYPES[c % len(Y_DTYPES)])
    elif kind == "y_value" and ykey in arrays and len(arrays[ykey]):
        v = LABELS[c % len(LABELS)]
        y = arrays[ykey].astype(np.uint64 if v > 2**63 - 1 else np.int64)
        y[b % len(y)] = v
        arrays[ykey] = y
    elif kind == "x_value" and key in arrays and arrays[key].size:
        x = arrays[key].copy()
        x.reshape(-1)[b % x.size] = FLOATS[c % len(FLOATS)]
        arrays[key] = x
    elif kind == "x_shape" and key in arrays:
        x = arrays[key]
        arrays[key] = [x[0, 0, 0, 0], x.reshape(-1), x[:, 0], x[:, None], x[:0], np.repeat(x, 3, axis=1),
                       np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1))), x[:, :, :0]][c % 8]
    elif kind == "y_shape" and ykey in arrays:
        y = arrays[ykey]
        arrays[ykey] = [y[:, None], y[0], y[: len(y) // 2], np.stack([y, y], 1)][c % 4]
    elif kind == "drop_key":
        arrays.pop(("x", "y", "x_val", "y_val")[c % 4], None)
    elif kind == "classes":
        arrays["classes"] = [np.array([f"c{i}" for i in range(10)]), np.array(["a", "a"] + [f"c{i}" for i in range(8)]),
                             np.array([b"\xff\xfe"] * 10), np.array([["a"] * 5] * 2), np.arange(10),
                             np.array([f"c{i}" for i in range(3)])][c % 6]


def _bad_npy(a, b, c) -> bytes:
    """An .npy member whose header lies: a huge or negative shape, a bad dtype, bad UTF-8, a
    version the reader does not know."""
    shapes = ((2**31, 1, 8, 8), (64, 1, 8, 8), (-1, 1, 8, 8), (2**62, 2**62), (), (64,))
    descrs = ("<f4", "<M8[s]", "|O", "<c8", "[('a', '<f4')]", "<f4")
    shape, descr = shapes[a % len(shapes)], descrs[b % len(descrs)]
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}" if descr[0] != "[" else \
        f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape!r}, }}"
    head = text.encode("latin1")
    if c % 4 == 1:
        head = head.replace(b"descr", b"\xff\xfeescr")
    version = (b"\x01\x00", b"\x03\x00", b"\x09\x00", b"\x01\x00")[c % 4]
    head += b" " * ((64 - (10 + len(head) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY" + version + struct.pack("<H", len(head)) + head + bytes(4 * 64)


def _save_npz(path: Path, arrays: dict, raw_x: Optional[bytes]) -> None:
    """np.savez without pickle, with x's member replaced by `raw_x` when given."""
    import io

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in arrays.items():
            if raw_x is not None and k == "x":
                z.writestr("x.npy", raw_x)
                continue
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(v), allow_pickle=False)
            z.writestr(f"{k}.npy", buf.getvalue())


def zip_bomb(path: Path, gib: float = 1.0) -> Path:
    """An .npz of about 1 MB whose x member decompresses to `gib` GiB of float32 zeros, written by
    streaming (never materialised here)."""
    n = int(gib * (1 << 30)) // (64 * 4)
    head = {"descr": "<f4", "fortran_order": False, "shape": (n, 1, 8, 8)}
    import io

    h = io.BytesIO()
    np.lib.format.write_array_header_1_0(h, head)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(h.getvalue())
            block = bytes(1 << 24)
            left = n * 64 * 4
            while left:
                f.write(block[:min(left, len(block))])
                left -= min(left, len(block))
        for k, v in base_arrays(64, 32).items():
            if k != "x":
                b = io.BytesIO()
                np.lib.format.write_array(b, v, allow_pickle=False)
                z.writestr(f"{k}.npy", b.getvalue())
    return path


def data_mutations():
    """hypothesis strategy: 1 to 3 data mutations."""
    from hypothesis import strategies as st

    one = st.tuples(st.sampled_from(DATA_KINDS), st.integers(0, 2**20), st.integers(0, 2**20), st.integers(0, 2**10))
    return st.lists(one, min_size=1, max_size=3)


IMAGE_KINDS = ("bits16", "mode32", "huge_header", "truncated", "text", "not_a_file", "empty_file", "modes",
               "empty_class", "stray_folder", "val_extra", "flip", "many_sizes")


def write_image_folder(root: Path, mutations) -> Path:
    """A 3-class folder of 8x8 digit PNGs (one subfolder per class), then `mutations`."""
    from PIL import Image

    d = base_arrays(30, 0)
    for label in range(3):
        (root / f"class{label}").mkdir(parents=True)
        for i, img in enumerate(d["x"][d["y"] == label][:5]):
            Image.fromarray((np.clip(img[0], 0, 1) * 255).astype(np.uint8)).save(root / f"class{label}" / f"{i}.png")
    for kind, a, b, c in mutations:
        folder = root / f"class{a % 3}"
        target = folder / f"fuzz{b % 100}.png"
        if kind == "bits16":
            Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(target)
        elif kind == "mode32":
            Image.fromarray(np.full((8, 8), 70000 if c % 2 else 0.5, np.int32 if c % 2 else np.float32)).save(
                target.with_suffix(".tiff"))
        elif kind == "huge_header":
            target.write_bytes(_png_header(((1 << 15) + c, 40000, 100000, 1)[c % 4], 20000 + a % 50000))
        elif kind == "truncated":
            data = (root / "class0" / "0.png").read_bytes()
            target.write_bytes(data[:a % len(data)])
        elif kind == "text":
            target.write_text("not an image\n")
        elif kind == "not_a_file":
            if c % 2:
                os.mkfifo(target)
            else:
                target.symlink_to("/dev/zero")
        elif kind == "empty_file":
            target.write_bytes(b"")
        elif kind == "modes":
            mode = ("RGBA", "P", "1", "LA", "CMYK", "I;16B", "RGB")[c % 7]
            im = Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).convert(
                "I;16B" if mode == "I;16B" else mode)
            im.save(target.with_suffix(".tiff" if mode in ("CMYK", "I;16B") else ".png"))
        elif kind == "empty_class":
            (root / f"empty{c % 5}").mkdir(exist_ok=True)
        elif kind == "stray_folder":
            (root / "train").mkdir(exist_ok=True)
        elif kind == "val_extra":
            (root / "val" / "other").mkdir(parents=True, exist_ok=True)
        elif kind == "flip":
            src = folder / "0.png"
            if src.exists():
                buf = bytearray(src.read_bytes())
                buf[a % len(buf)] ^= 1 << (b % 8)
                target.write_bytes(bytes(buf))
        elif kind == "many_sizes":
            Image.fromarray(np.zeros((1 + c % 300, 1 + a % 300), np.uint8)).save(target)
    return root


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height and whose data is a few bytes of zeros."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def image_mutations():
    from hypothesis import strategies as st

    one = st.tuples(st.sampled_from(IMAGE_KINDS), st.integers(0, 2**16), st.integers(0, 2**16), st.integers(0, 2**10))
    return st.lists(one, min_size=1, max_size=3)


# ----------------------------------------------------------------------------- runs and verdicts
@dataclass
class Outcome:
    """What one run of the CLI did."""

    code: Optional[int]           # exit code (None: killed by a signal or timed out)
    stderr: str
    signal: Optional[int] = None
    hung: bool = False
    max_rss: int = 0              # bytes (subprocess runs only)
    warnings: tuple = ()          # warning categories recorded in-process


def verdict(out: Outcome) -> str:
    """'success', 'clean error', or what went wrong: 'internal error', 'signal', 'hang', '> 2 GiB',
    'warning leaked', 'traceback', 'unclean'."""
    if out.hung:
        return "hang"
    if out.signal is not None:
        return "signal"
    if out.max_rss > MAX_RSS:
        return "> 2 GiB"
    if "internal error" in out.stderr:
        return "internal error"
    if "Traceback" in out.stderr:
        return "traceback"
    if out.warnings:
        return "warning leaked"
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    others = [ln for ln in lines if not ln.startswith(("error: ", "warning: "))]
    if others:
        return "warning leaked"
    if out.code == 0 and not errors:
        return "success"
    if out.code in (1, 2) and len(errors) == 1 and lines[-1] == errors[0]:
        return "clean error"
    return "unclean"


GOOD = ("success", "clean error")


def run_in_process(args: List[str]) -> Outcome:
    """The CLI in this process (click's CliRunner), with warnings recorded."""
    from click.testing import CliRunner

    from edgetune.runtime.cli import cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    leaked = tuple(sorted({w.category.__name__ for w in caught
                           if issubclass(w.category, RuntimeWarning) or "PIL" in (w.category.__module__ or "")}))
    stderr = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        stderr += f"\nTraceback (an exception escaped the CLI: {type(res.exception).__name__}: {res.exception})"
    return Outcome(res.exit_code, stderr, warnings=leaked)


def run_subprocess(args: List[str], cwd: Path, timeout: float = RUN_TIMEOUT) -> Outcome:
    """The CLI as a child process: its signal, whether it hung (killed after `timeout`), and its
    memory peak (ru_maxrss of this child alone, from wait4)."""
    cmd = [sys.executable, "-c", "from edgetune.runtime.cli import main; main()"] + [str(a) for a in args]
    err_path = cwd / ".fuzz-stderr"

    def limits():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (_AS_LIMIT, _AS_LIMIT))

    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=limits, env={**os.environ, "EDGETUNE_DEBUG": ""})
    hung = threading.Event()

    def kill():
        hung.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace")
    err_path.unlink()
    sig = -proc.returncode if proc.returncode < 0 and not hung.is_set() else None
    return Outcome(None if proc.returncode < 0 else proc.returncode, stderr, signal=sig, hung=hung.is_set(),
                   max_rss=usage.ru_maxrss * 1024)


def record(corpus: str, case, out: Outcome, seconds: float) -> str:
    """The verdict of `out`, appended with `case` to $EDGETUNE_FUZZ_LOG when it is set."""
    v = verdict(out)
    log = os.environ.get("EDGETUNE_FUZZ_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"corpus": corpus, "verdict": v, "case": repr(case), "code": out.code,
                                "seconds": round(seconds, 2), "max_rss": out.max_rss,
                                "stderr": out.stderr[-400:]}) + "\n")
    return v


def check(corpus: str, case, args: List[str], cwd: Path, subprocess_run: bool) -> Outcome:
    """Run `args`, record the verdict and fail the test unless it is success or a clean error."""
    t0 = time.perf_counter()
    out = run_subprocess(args, cwd) if subprocess_run else run_in_process(args)
    v = record(corpus, case, out, time.perf_counter() - t0)
    assert v in GOOD, f"{corpus}: {v} for {case!r}\nexit {out.code} signal {out.signal} " \
                      f"rss {out.max_rss >> 20} MiB warnings {out.warnings}\n{out.stderr[-3000:]}"
    return out


COLUMNS = ("success", "clean error", "internal error", "signal", "hang", "> 2 GiB")


def table(log: str) -> str:
    """The markdown table of a run log: one row per corpus, as in issue 22 section 2."""
    rows, cases = {}, {}
    for line in open(log):
        r = json.loads(line)
        rows.setdefault(r["corpus"], []).append(r["verdict"])
        cases.setdefault(r["corpus"], set()).add(r["case"])
    out = ["| corpus | runs | clean `error:` | success | `internal error (...)` | signal | hang | > 2 GiB | other |",
           "|---|---|---|---|---|---|---|---|---|"]
    for corpus, verdicts in sorted(rows.items()):
        n = {c: verdicts.count(c) for c in COLUMNS}
        other = len(verdicts) - sum(n.values())
        out.append(f"| {len(cases[corpus])} {corpus} | {len(verdicts)} | {n['clean error']} | {n['success']} | "
                   f"{n['internal error']} | {n['signal']} | {n['hang']} | {n['> 2 GiB']} | {other} |")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "table":
        print(table(sys.argv[2]))
    else:
        sys.exit("usage: python tests/fuzz_inputs.py table LOG")
