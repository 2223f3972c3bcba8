"""Shared test utilities: small ONNX files built by hand, and the CLI runner."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from click.testing import CliRunner

from edgetune.runtime.cli import cli


def run_cli(*args):
    """Invoke the CLI in-process; returns click's Result."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def tiny_mlp(path, in_features=64, hidden=16, classes=10, op="Relu", seed=0, elem=TensorProto.FLOAT):
    """Flatten -> Gemm -> <op> -> Gemm, (N,1,8,8) input; `op` may be an unsupported one."""
    rng = np.random.default_rng(seed)
    np_type = {TensorProto.FLOAT: np.float32, TensorProto.INT8: np.int8}[elem]
    w1 = (rng.standard_normal((hidden, in_features)) * 0.2).astype(np_type)
    w2 = (rng.standard_normal((classes, hidden)) * 0.2).astype(np_type)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(hidden, np_type), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(classes, np_type), "b2")]
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node(op, ["h"], ["a"], name="act1"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", elem, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", elem, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def digits_like(path, n=64, classes=10, shape=(1, 8, 8), seed=0, **overrides):
    """An .npz in edgetune's data format; `overrides` replace arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.random((n,) + shape).astype(np.float32), "y": rng.integers(0, classes, n),
              "x_val": rng.random((n // 2,) + shape).astype(np.float32), "y_val": rng.integers(0, classes, n // 2)}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def digit_image_folder(root, names=("cat", "dog", "owl"), digits=(0, 1, 2), per_class=30, size=32,
                       layout="train_val", mode="RGB", ext="png"):
    """A folder of real-looking images: bundled digits `digits`, upscaled to size x size and coloured,
    saved under one subfolder per class name (inside train/ and val/ for layout="train_val")."""
    from PIL import Image
    from edgetune import models

    d = models.load_dataset("digits_shifted")
    splits = {"train": (d["x"], d["y"]), "val": (d["x_val"], d["y_val"])}
    if layout != "train_val":
        splits = {"": (np.concatenate([d["x"], d["x_val"]]), np.concatenate([d["y"], d["y_val"]]))}
    for split, (x, y) in splits.items():
        for name, digit in zip(names, digits):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(x[y == digit][:per_class]):
                a = (np.clip(img[0], 0, 1) * 255).astype(np.uint8)
                im = Image.fromarray(np.stack([a, a // 2, 255 - a], -1)).resize((size, size), Image.NEAREST)
                im.convert(mode).save(folder / f"{i}.{ext}")
    return root


def save_graph(path, nodes, inits, in_shape, out_shape, name="g"):
    """An opset-17 model with one float input `input` and one output `logits`, saved to `path`."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def assert_bad_input(result, needle, codes=(1, 2)):
    """A bad-input run: exit code in `codes` (3: a device error), exactly one stderr line `error: ...`
    containing `needle`, never an "internal error" (a bug reached the catch-all), no traceback."""
    assert result.exit_code in codes, (result.exit_code, result.output)
    err = result.stderr
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in result.output, lines[0]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


class SimClockTransport:
    """Base of the test transports that run on a simulated clock (`now`, advanced by their reads;
    pass `clock` to DeviceClient): open and close do nothing."""

    now = 0.0

    def clock(self):
        return self.now

    def open(self):
        pass

    def close(self):
        pass
