"""Each failure of issue 22's fuzzer, as a fixed case: the clean error must name the problem, and
the runs that used to crash, hang or allocate gigabytes run in a child process that is watched
for exactly that (tests/fuzz_inputs.py). The fuzz tests themselves draw many more cases."""
from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import fuzz_inputs as F
from edgetune import models
from helpers import assert_bad_input, run_cli
from requires import need

LIMIT_RSS = 1 << 30     # these runs must stay far below the fuzzer's 2 GiB


def _model(tmp_path, name="digits_cnn", edit=None, file="m.onnx"):
    proto = onnx.load(str(models.model_path(name)))
    if edit is not None:
        edit(proto)
    path = tmp_path / file
    onnx.save(proto, str(path))
    return path


def _node(proto, op, i=0):
    return [n for n in proto.graph.node if n.op_type == op][i]


def _attr(node, name, value):
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def _init(proto, name, fn):
    for t in proto.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()), name))


def _nan(a):
    a.reshape(-1)[0] = np.nan
    return a


def _insert_bn(proto, size):
    conv = _node(proto, "Conv")
    names = [f"bn_{r}" for r in "sbmv"]
    proto.graph.initializer.extend(numpy_helper.from_array(np.ones(size, np.float32), n) for n in names)
    out = conv.output[0]
    conv.output[0] = "pre_bn"
    proto.graph.node.insert(1, helper.make_node("BatchNormalization", ["pre_bn"] + names, [out], name="bn"))


def _insert_reshape(proto):
    relu = _node(proto, "Relu")
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1, 128, 1, 1], np.int64), "shape"))
    out = relu.output[0]
    relu.output[0] = "pre_reshape"
    proto.graph.node.insert(2, helper.make_node("Reshape", ["pre_reshape", "shape"], [out], name="reshape"))


def _input_dim(value):
    def edit(proto):
        d = proto.graph.input[0].type.tensor_type.shape.dim[2]
        d.Clear()
        d.dim_value = value
    return edit


def _cycle(proto):
    _node(proto, "Conv", 0).input[0] = _node(proto, "Relu", 1).output[0]


MODELS = {
    "kernel 0": (lambda p: _attr(_node(p, "Conv"), "kernel_shape", [0, 3]), "kernel_shape=[0, 3]"),
    "stride 0": (lambda p: _attr(_node(p, "Conv"), "strides", [0, 1]), "strides=[0, 1]"),
    "pads -5": (lambda p: _attr(_node(p, "Conv"), "pads", [-5, 1, 1, 1]), "pads=[-5, 1, 1, 1]"),
    "dilation 0": (lambda p: _attr(_node(p, "Conv"), "dilations", [1, 0]), "dilations=[1, 0]"),
    "group not dividing": (lambda p: _attr(_node(p, "Conv", 1), "group", 3), "group=3"),
    "opset 0": (lambda p: setattr(p.opset_import[0], "version", 0), "opset 0 is not supported"),
    "opset 99": (lambda p: setattr(p.opset_import[0], "version", 99), "opset 99 is not supported"),
    "NaN weight": (lambda p: _init(p, "conv1.bias", _nan), "'conv1.bias' holds 1 NaN or infinite value"),
    "input dim 2^31": (_input_dim(2**31), "each must be 1 to"),
    "input dim 0": (_input_dim(0), "each must be 1 to"),
    "initializer dims 2^31": (lambda p: p.graph.initializer[0].dims.__setitem__(0, 2**31), "has dims (2147483648"),
    "initializer dtype": (lambda p: setattr(p.graph.initializer[0], "data_type", onnx.TensorProto.STRING),
                          "element type string"),
    "deleted node": (lambda p: p.graph.node.remove(_node(p, "Conv", 1)), "which no node, input or initializer"),
    "deleted initializer": (lambda p: p.graph.initializer.remove(p.graph.initializer[2]),
                            "which no node, input or initializer"),
    "cycle": (_cycle, "(a cycle, or nodes out of topological order)"),
    "duplicate node name": (lambda p: setattr(p.graph.node[1], "name", p.graph.node[0].name), "two nodes are named"),
    "duplicate initializer": (lambda p: p.graph.initializer.append(p.graph.initializer[0]), "two initializers"),
    "inserted BatchNorm": (lambda p: _insert_bn(p, 7), "its scale has shape (7,); the input has 16 channels"),
    "reshape to (1,128,1,1)": (_insert_reshape, "Reshape node 'reshape'"),
    "maxpool pads >= kernel": (None, "must be smaller than kernel_shape"),
}


def _maxpool(tmp_path):
    """digits_cnn with a MaxPool (pads 2, kernel 2) after its first ReLU."""
    def edit(p):
        relu = _node(p, "Relu")
        out = relu.output[0]
        relu.output[0] = "pre_pool"
        p.graph.node.insert(2, helper.make_node("MaxPool", ["pre_pool"], [out], kernel_shape=[2, 2], pads=[2, 2, 2, 2],
                                                strides=[1, 1], name="pool"))
    return _model(tmp_path, edit=edit)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_a_broken_model_is_one_error_naming_the_problem(tmp_path, case):
    edit, needle = MODELS[case]
    model = _maxpool(tmp_path) if edit is None else _model(tmp_path, edit=edit)
    for args in (["info", model], ["finetune", model, "--data", "digits_shifted", "--epochs", "1", "--out",
                                   tmp_path / "o.onnx"]):
        assert_bad_input(run_cli(*args), needle)
    assert not (tmp_path / "o.onnx").exists()


def test_the_segfaulting_model_is_a_clean_error_in_a_child_process(tmp_path):
    """bench_mobilenet_relu6 with a NaN in its first bias, at opset 0 and at its own opset 17."""
    first_bias = [n.input[2] for n in onnx.load(str(models.model_path("bench_mobilenet_relu6"))).graph.node
                  if n.op_type == "Conv"][0]
    for opset, needle in ((0, "opset 0 is not supported"), (17, "holds 1 NaN or infinite value")):
        def edit(p, opset=opset):
            _init(p, first_bias, _nan)
            p.opset_import[0].version = opset
        model = _model(tmp_path, "bench_mobilenet_relu6", edit, file=f"nan{opset}.onnx")
        out = F.run_subprocess(["info", model], tmp_path)
        assert F.verdict(out) == "clean error" and needle in out.stderr, out


def _npz(tmp_path, name="d.npz", **overrides):
    arrays = F.base_arrays()
    arrays.update(overrides)
    path = tmp_path / name
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _labels(dtype, value):
    y = F.base_arrays()["y"].astype(dtype)
    y[5] = value
    return y


DATA = {
    "datetime labels": (dict(y=F.base_arrays()["y"].astype("datetime64[D]")), "dtype datetime64[D]"),
    "2-D y": (dict(y=np.stack([F.base_arrays()["y"]] * 2, 1)), "labels are a 1-D array"),
    "x and y lengths": (dict(y=F.base_arrays()["y"][:50]), "64 inputs but 50 labels"),
    "0-d x": (dict(x=np.float32(1.0)), "array 'x' has shape ()"),
    "float labels": (dict(y=F.base_arrays()["y"].astype(np.float32)), "labels are integer class indices"),
    "inputs 3e38": (dict(x=np.where(np.arange(64 * 64).reshape(64, 1, 8, 8) == 7, np.float32(3e38),
                                    F.base_arrays()["x"])), "training inputs reach 3e+38"),
    "inputs 1e30": (dict(x_val=np.full((32, 1, 8, 8), 1e30, np.float32)), "validation inputs reach 1e+30"),
    "classes not UTF-8": (dict(classes=np.array([b"\xff\xfe"] * 10)), "not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(DATA))
def test_bad_data_is_one_error_naming_the_problem(tmp_path, case):
    overrides, needle = DATA[case]
    data = _npz(tmp_path, **overrides)
    for args in (["eval", "digits_cnn", "--data", data],
                 ["finetune", "digits_cnn", "--data", data, "--epochs", "1", "--out", tmp_path / "o.onnx"]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_cli(*args)
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
        assert_bad_input(result, needle)


@pytest.mark.parametrize("case", ["label 2^64-1", "label 10^9", "zip bomb", "FIFO", "/dev/zero"])
def test_data_that_allocated_or_hung_is_refused_quickly(tmp_path, case):
    """Before: 2.9-8 GiB for the labels, 2.45 GiB for a 1 MB zip bomb, a FIFO hung forever."""
    data = tmp_path / "d.npz"
    if case == "label 2^64-1":
        _npz(tmp_path, y=_labels(np.uint64, 2**64 - 1))
    elif case == "label 10^9":
        _npz(tmp_path, y_val=_labels(np.int64, 10**9)[:32])
    elif case == "zip bomb":
        F.zip_bomb(data)
        assert data.stat().st_size < 8 << 20
    elif case == "FIFO":
        os.mkfifo(data)
    else:
        data.symlink_to("/dev/zero")
    needle = {"label 2^64-1": "a label of 18446744073709551615", "label 10^9": "a label of 1000000000",
              "zip bomb": "a data file may hold at most", "FIFO": "is a FIFO", "/dev/zero": "character device"}[case]
    for cmd in ("eval", "finetune"):
        out = F.run_subprocess([cmd, "digits_cnn", "--data", data], tmp_path, timeout=60)
        assert F.verdict(out) == "clean error" and needle in out.stderr, out
        assert out.max_rss < LIMIT_RSS, f"{out.max_rss >> 20} MiB"


def _png16(path, values):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def test_16_bit_pngs_are_scaled_by_their_bit_depth(tmp_path):
    """They loaded 99.6% saturated (Pillow's 8-bit conversion clips at 255) and the data line said /255."""
    need("PIL")
    from edgetune.runtime.data import load_data

    rng = np.random.default_rng(0)
    images = {}
    for cls in ("a", "b"):
        for i in range(3):
            v = rng.integers(0, 65536, (8, 8))
            images[(cls, i)] = v
            _png16(tmp_path / "imgs" / cls / f"{i}.png", v)
    ds = load_data(str(tmp_path / "imgs"), (None, 1, 8, 8))
    x = np.concatenate([ds.x, ds.x_val])[:, 0]
    want = np.stack([v for v in images.values()]).astype(np.float32) / np.float32(65535)
    assert sorted(map(float, x.sum(axis=(1, 2)))) == pytest.approx(sorted(map(float, want.sum(axis=(1, 2)))))
    assert float(x.max()) <= 1.0 and float((x == 1.0).mean()) < 0.01
    assert "pixels /65535 (16-bit) -> [0, 1]" in ds.summary


def test_32_bit_and_giant_images_are_skipped_with_a_reason_and_no_pillow_warning(tmp_path):
    need("PIL")
    from PIL import Image

    root = F.write_image_folder(tmp_path / "imgs", [])
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(root / "class0" / "deep.tiff")
    (root / "class1" / "giant.png").write_bytes(F._png_header(40000, 40000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli("finetune", "digits_cnn", "--data", root, "--epochs", "1", "--out", tmp_path / "o.onnx")
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "PIL" in (w.category.__module__ or "")], [str(w.message) for w in caught]
    warned = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: skipped 2 unreadable")]
    assert warned and ("mode I (32-bit pixels)" in warned[0] or "40000x40000" in warned[0]), result.stderr


def test_a_model_that_does_not_survive_export_is_never_written(tmp_path, monkeypatch):
    """onnxruntime's check after training finds NaN outputs: exit 1, and no file (it was written
    before the check, with exit 0: 'wrote o.onnx (onnxruntime max abs diff nan)')."""
    from edgetune.runtime import onnx_export

    real = onnx_export.ort_logits
    calls = []

    def nan_after_training(path, x, **kw):
        calls.append(path)
        out = real(path, x, **kw)
        return out * np.nan if len(calls) > 1 else out     # the preflight check passes, the final one fails

    monkeypatch.setattr(onnx_export, "ort_logits", nan_after_training)
    result = run_cli("finetune", "digits_mlp", "--epochs", "1", "--out", tmp_path / "o.onnx")
    assert_bad_input(result, "was not written to")
    assert "onnxruntime's outputs are not finite" in result.stderr and not (tmp_path / "o.onnx").exists()


def test_non_finite_trained_weights_are_never_written(tmp_path, monkeypatch):
    from edgetune.runtime.engines.dense import DenseEngine

    real = DenseEngine.get_params
    monkeypatch.setattr(DenseEngine, "get_params", lambda self: {k: v * np.nan for k, v in real(self).items()})
    result = run_cli("finetune", "digits_mlp", "--engine", "dense", "--epochs", "1", "--out", tmp_path / "o.onnx")
    assert_bad_input(result, "non-finite (NaN or Inf), so nothing was written")
    assert not (tmp_path / "o.onnx").exists()


def test_huge_weights_give_a_clean_error_and_no_runtime_warning(tmp_path):
    model = _model(tmp_path, edit=lambda p: _init(p, "conv1.bias", lambda a: np.full_like(a, 3e38)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = run_cli("info", model)
        tune = run_cli("finetune", model, "--data", "digits_shifted", "--epochs", "1", "--out", tmp_path / "o.onnx")
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert info.exit_code == 0 and "supported: no" in info.stdout and "not finite" in info.stdout
    assert_bad_input(tune, "outputs are not finite (NaN or overflow)")


def test_emulator_port_out_of_range_is_a_usage_error():
    result = run_cli("emulator", "--tcp", ":99999")
    assert_bad_input(result, "--tcp :99999: the port must be 0 to 65535", (2,))


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    from edgetune.runtime import atomic

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    out = tmp_path / "o.onnx"
    result = run_cli("finetune", "digits_mlp", "--epochs", "1", "--out", out)
    assert_bad_input(result, f"error: {out}: No space left on device")
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_symbolic_height_and_width_are_not_checked_as_1(tmp_path):
    """A fully convolutional export (dynamic H and W) has no sample shape to walk: the checks must
    not take the symbolic sizes for 1 and call the 3x3 kernel larger than the input."""
    from edgetune.runtime import load_model
    from helpers import save_graph

    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.ones((10, 4), np.float32), "fc")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], name="head", transB=1)]
    model = load_model(str(save_graph(tmp_path / "fcn.onnx", nodes, [w, fc], ["N", 1, "H", "W"], ["N", 10])))
    assert model.input_shape == (None, 1, None, None)
