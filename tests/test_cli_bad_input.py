"""Every bad input gets one line naming the problem, exit code 1 or 2, no traceback, no output file."""
import os
import warnings

import numpy as np
import pytest
from onnx import TensorProto

from helpers import assert_bad_input, run_cli, tiny_mlp, digits_like


def _cases(tmp):
    good_model = str(tiny_mlp(tmp / "good.onnx"))
    good_data = str(digits_like(tmp / "good.npz"))
    trunc = tmp / "trunc.onnx"
    trunc.write_bytes(open(good_model, "rb").read()[:150])
    text = tmp / "notes.onnx"
    text.write_text("this is not a model\n")
    unsupported = str(tiny_mlp(tmp / "tanh.onnx", op="Tan"))
    int8 = str(tiny_mlp(tmp / "int8.onnx", elem=TensorProto.INT8))
    rank = str(digits_like(tmp / "rank.npz", x=np.zeros((64, 64), np.float32),
                           x_val=np.zeros((32, 64), np.float32)))
    labels = str(digits_like(tmp / "labels.npz", y=np.full(64, 12)))
    x_nan = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    x_nan[3, 0, 2, 2] = np.nan
    nan = str(digits_like(tmp / "nan.npz", x=x_nan))
    empty = str(digits_like(tmp / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64)))
    no_y = tmp / "no_y.npz"
    np.savez(no_y, x=np.zeros((4, 1, 8, 8), np.float32))
    pickled = tmp / "pickled.npz"
    np.savez(pickled, x=np.array([object()] * 4, dtype=object), y=np.zeros(4, np.int64))
    mismatch = str(digits_like(tmp / "mismatch.npz", y=np.zeros(10, np.int64)))
    shape = str(digits_like(tmp / "shape.npz", shape=(1, 9, 9)))
    a_file = tmp / "plainfile"
    a_file.write_text("x")
    out = ["--out", str(tmp / "out.onnx")]
    ft = ["finetune", "--engine", "dense", "--epochs", "1"]
    return {
        "truncated onnx": (ft + [str(trunc), "--data", good_data] + out, "not a readable ONNX model"),
        "non-onnx file": (ft + [str(text), "--data", good_data] + out, "not a readable ONNX model"),
        "unsupported op": (ft + [unsupported, "--data", good_data] + out, "unsupported op Tan in node 'act1'"),
        "int8 model": (ft + [int8, "--data", good_data] + out, "only float32 models are supported"),
        "missing model": (ft + [str(tmp / "nope.onnx"), "--data", good_data] + out, "no such model"),
        "missing data": (ft + [good_model, "--data", str(tmp / "nope.npz")] + out, "no such data"),
        "wrong input rank": (ft + [good_model, "--data", rank] + out, "rank 2"),
        "labels out of range": (ft + [good_model, "--data", labels] + out, "has labels up to 12 (13 classes) but"),
        "nan in data": (ft + [good_model, "--data", nan] + out, "NaN or Inf"),
        "empty data set": (ft + [good_model, "--data", empty] + out, "set is empty"),
        "missing labels array": (ft + [good_model, "--data", str(no_y)] + out, "missing array 'y'"),
        "pickled npz": (ft + [good_model, "--data", str(pickled)] + out, "without pickle"),
        "length mismatch": (ft + [good_model, "--data", mismatch] + out, "64 inputs but 10 labels"),
        "sample shape": (ft + [good_model, "--data", shape] + out, "does not match the model input"),
        "batch size 0": (ft + [good_model, "--data", good_data, "--batch-size", "0"] + out, "--batch-size must be at least 1"),
        "negative lr": (ft + [good_model, "--data", good_data, "--lr", "-1"] + out, "--lr must be a positive"),
        "unwritable output": (ft + [good_model, "--data", good_data, "--out", str(a_file / "x.onnx")],
                              "plainfile is a file, so the folder"),
        "output is a folder": (ft + [good_model, "--data", good_data, "--out", str(tmp)], "is a folder"),
        "too many layers": (ft + [good_model, "--data", good_data, "--train-layers", "last:9"] + out, "only 2 Conv/Gemm"),
        "bad train-layers": (ft + [good_model, "--data", good_data, "--train-layers", "first"] + out, "'all' or 'last:K'"),
        "resume without checkpoint": (ft + [good_model, "--data", good_data, "--resume"] + out, "--resume needs --checkpoint"),
        "eval unknown data": (["eval", good_model, "--data", "no_such_set"], "no such data"),
        "info of a text file": (["info", str(text)], "not a readable ONNX model"),
        "diverging learning rate": (["finetune", "--epochs", "1", good_model, "--data", good_data, "--lr", "1e38"] + out,
                                    "training diverged"),
    }


def _case_names():
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return sorted(_cases(pathlib.Path(tmp)))


@pytest.mark.parametrize("case", _case_names())
def test_bad_input(tmp_path, case):
    args, needle = _cases(tmp_path)[case]
    before = set(os.listdir(tmp_path))
    with warnings.catch_warnings(record=True) as caught:   # a warning would be a second stderr line for a user
        warnings.simplefilter("always")
        result = run_cli(*args)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert_bad_input(result, needle)
    assert set(os.listdir(tmp_path)) == before, "a bad run must not leave files behind"
