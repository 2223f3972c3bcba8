"""More bad input (issue 15, item 7): settings, data, image folders, model structure, checkpoints,
bench and the device URL. Same promise as test_cli_bad_input: one line naming what is wrong,
exit code 1 or 2, no traceback, never "internal error", nothing left behind."""
import os
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import assert_bad_input, digit_image_folder, digits_like, run_cli, save_graph, tiny_mlp


def _two_io(path, two_inputs):
    """Gemm models with two inputs (added) or two outputs."""
    from onnx import numpy_helper

    w = numpy_helper.from_array(np.zeros((10, 64), np.float32), "w")
    nodes = [helper.make_node("Flatten", ["input"], ["f"])]
    ins = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])]
    if two_inputs:
        ins.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 10]))
        nodes += [helper.make_node("Gemm", ["f", "w"], ["g"], transB=1), helper.make_node("Add", ["g", "extra"], ["logits"])]
    else:
        nodes += [helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1),
                  helper.make_node("Relu", ["logits"], ["second"])]
        outs.append(helper.make_tensor_value_info("second", TensorProto.FLOAT, ["N", 10]))
    model = helper.make_model(helper.make_graph(nodes, "two", ins, outs, [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import onnx

    onnx.save(model, str(path))
    return str(path)


def _rank3(path):
    """Flatten -> Gemm on a (N, 4, 8) input: rank 3 is neither (N, F) nor (N, C, H, W)."""
    from onnx import numpy_helper

    w = numpy_helper.from_array(np.zeros((10, 32), np.float32), "w")
    nodes = [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)]
    return str(save_graph(path, nodes, [w], ["N", 4, 8], ["N", 10]))


def _cases(tmp):
    good_model = str(tiny_mlp(tmp / "good.onnx"))
    good_data = str(digits_like(tmp / "good.npz"))
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 8, 8)).astype(np.float32)
    inf = str(digits_like(tmp / "inf.npz", x=np.full((64, 1, 8, 8), np.inf, np.float32),
                          x_val=np.full((32, 1, 8, 8), np.inf, np.float32)))
    float_y = str(digits_like(tmp / "floaty.npz", y=np.full(64, 0.5)))
    neg_y = str(digits_like(tmp / "negy.npz", y=-np.ones(64, np.int64)))
    no_yval = str(digits_like(tmp / "noyval.npz", y_val=None))
    garbage = tmp / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip archive")
    a_file = tmp / "plainfile"
    a_file.write_text("x")
    # image folders
    no_classes = tmp / "imgs_none"
    (no_classes / "train").mkdir(parents=True)
    (no_classes / "val").mkdir()
    stray = digit_image_folder(tmp / "imgs_stray", per_class=2, size=8)
    (stray / "extra").mkdir()
    val_extra = digit_image_folder(tmp / "imgs_valextra", per_class=2, size=8)
    (val_extra / "val" / "emu").mkdir()
    empty_class = digit_image_folder(tmp / "imgs_emptyclass", per_class=2, size=8, layout="flat")
    (empty_class / "yak").mkdir()
    unreadable = digit_image_folder(tmp / "imgs_unreadable", per_class=2, size=8, layout="flat")
    (unreadable / "zebra").mkdir()
    (unreadable / "zebra" / "0.png").write_bytes(b"not a png")
    no_val_images = digit_image_folder(tmp / "imgs_noval", per_class=2, size=8)
    for cls in os.listdir(no_val_images / "val"):
        for f in os.listdir(no_val_images / "val" / cls):
            os.remove(no_val_images / "val" / cls / f)
    # models
    two_in, two_out = _two_io(tmp / "two_in.onnx", True), _two_io(tmp / "two_out.onnx", False)
    rank3 = _rank3(tmp / "rank3.onnx")
    folder_model = tmp / "a_folder.onnx"
    folder_model.mkdir()
    # checkpoints
    other_ckpt = tmp / "ck_other"
    other_ckpt.mkdir()
    bad_ckpt = tmp / "ck_bad"
    bad_ckpt.mkdir()
    (bad_ckpt / "checkpoint.npz").write_bytes(b"garbage")
    out = ["--out", str(tmp / "out.onnx")]
    ft = ["finetune", "--engine", "dense", "--epochs", "1"]
    return {
        "epochs 0": (["finetune", "--engine", "dense", "--epochs", "0", good_model, "--data", good_data] + out,
                     "--epochs"),
        "report to a bad path": (ft + [good_model, "--data", good_data, "--report", str(a_file / "r.json")] + out,
                                 "plainfile"),
        "checkpoint folder is a file": (ft + [good_model, "--data", good_data, "--checkpoint", str(a_file)] + out,
                                        "plainfile"),
        "inf-only data": (ft + [good_model, "--data", inf] + out, "NaN or Inf"),
        "float labels": (ft + [good_model, "--data", float_y] + out, "labels"),
        "negative labels": (ft + [good_model, "--data", neg_y] + out, "labels"),
        "x_val without y_val": (ft + [good_model, "--data", no_yval] + out, "y_val"),
        "unreadable npz": (ft + [good_model, "--data", str(garbage)] + out, "garbage.npz"),
        "image folder without classes": (ft + [good_model, "--data", str(no_classes)] + out, "one subfolder per class"),
        "image folder with a stray folder": (ft + [good_model, "--data", str(stray)] + out, "extra/"),
        "image val class not in train": (ft + [good_model, "--data", str(val_extra)] + out, "emu"),
        "image class folder empty": (ft + [good_model, "--data", str(empty_class)] + out, "'yak' has no readable images"),
        "image class unreadable": (ft + [good_model, "--data", str(unreadable)] + out, "'zebra' has no readable images"),
        "image val without images": (ft + [good_model, "--data", str(no_val_images)] + out, "no readable images"),
        "model with 2 inputs": (ft + [two_in, "--data", good_data] + out, "input"),
        "model with 2 outputs": (ft + [two_out, "--data", good_data] + out, "output"),
        "rank-3 model": (ft + [rank3, "--data", good_data] + out, "input rank 3 is not supported"),
        "folder as model": (ft + [str(folder_model), "--data", good_data] + out, "a_folder.onnx"),
        "unreadable checkpoint": (ft + [good_model, "--data", good_data, "--checkpoint", str(bad_ckpt), "--resume"]
                                  + out, "unreadable checkpoint"),
        "bench steps 0": (["bench", "--steps", "0"], "--steps"),
        "malformed device url": (["finetune", "--engine", "device", "--device", "nosuchscheme://x", "--epochs", "1",
                                  good_model, "--data", good_data] + out, "nosuchscheme", (3,)),
    }


def _case_names():
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return sorted(_cases(pathlib.Path(tmp)))


@pytest.mark.parametrize("case", _case_names())
def test_more_bad_input(tmp_path, case):
    args, needle, *codes = _cases(tmp_path)[case]
    before = set(os.listdir(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli(*args)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert_bad_input(result, needle, *codes)
    assert set(os.listdir(tmp_path)) == before, "a bad run must not leave files behind"


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    """Same settings (the same model path), but the file now holds another model."""
    model, data, ck = tiny_mlp(tmp_path / "m.onnx"), digits_like(tmp_path / "d.npz"), tmp_path / "ck"
    first = run_cli("finetune", "--engine", "dense", "--epochs", "1", model, "--data", data, "--checkpoint", ck,
                    "--out", tmp_path / "o.onnx")
    assert first.exit_code == 0, first.output
    tiny_mlp(model, hidden=8)
    result = run_cli("finetune", "--engine", "dense", "--epochs", "2", model, "--data", data, "--checkpoint", ck,
                     "--resume", "--out", tmp_path / "o2.onnx")
    assert_bad_input(result, "does not fit")
    assert "shape" in result.stderr and not (tmp_path / "o2.onnx").exists()
