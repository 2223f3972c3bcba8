"""Issue 12, item 1: what people really export from torch trains and exports with any batch size.

Both torch exporters, with a fixed batch (a batch-1 dummy input and no dynamic axes, the
most common export) and with a dynamic one, fine-tuned from the CLI. Plus the rewrites
themselves (auto_pad, batch-bound Reshape targets) against onnxruntime on generated cases."""
import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from requires import need, need_exporter  # noqa: E402

torch = need("torch")

import torch_zoo  # noqa: E402
from conftest import assert_close  # noqa: E402
from helpers import digits_like, run_cli, save_graph  # noqa: E402
from edgetune.runtime import load_model  # noqa: E402
from edgetune.runtime.onnx_batch import same_pads  # noqa: E402
from edgetune.runtime.onnx_export import ort_logits  # noqa: E402

CASES = [(e, b) for e in ("script", "dynamo") for b in ("fixed", "dynamic")]


class _Exports(dict):
    """(exporter, batch) -> exported file, made on first use: a 'dynamo' case needs onnxscript,
    and its absence must not skip the TorchScript cases."""

    def __init__(self, module, chw, folder):
        super().__init__()
        self.module, self.chw, self.folder = module, chw, folder

    def __missing__(self, key):
        exporter, batch = key
        need_exporter(exporter)
        path = self.folder / f"user-{exporter}-{batch}.onnx"
        self[key] = torch_zoo.export(self.module, self.chw, path, exporter, batch)
        return self[key]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    module, chw = torch_zoo.build("view_same", seed=3)
    return module, chw, _Exports(module, chw, tmp_path_factory.mktemp("exports"))


def _batch_dim(value_info):
    d = value_info.type.tensor_type.shape.dim[0]
    return d.dim_param if d.HasField("dim_param") else d.dim_value


@pytest.mark.parametrize("exporter,batch", CASES)
def test_torch_export_fine_tunes_from_the_cli(exports, tmp_path, exporter, batch):
    module, chw, paths = exports
    path = paths[exporter, batch]
    if batch == "fixed":   # the premise: the file really is tied to batch 1
        assert _batch_dim(onnx.load(str(path)).graph.input[0]) == 1
    data = digits_like(tmp_path / "d.npz", n=40, classes=10, shape=chw)
    info = run_cli("info", path)
    assert info.exit_code == 0, info.output
    assert "supported: yes (engines native, dense run a training step; the export runs in onnxruntime " \
           "with any batch size)" in info.output
    if batch == "fixed":
        assert "batch fixed at 1 in the file -> symbolic" in info.output
    out = tmp_path / "tuned.onnx"
    # batch 7 does not divide 40: the last batch has another size again
    result = run_cli("finetune", path, "--data", data, "--epochs", "1", "--batch-size", "7", "--out", out,
                     "--keep", "last")
    assert result.exit_code == 0, result.output
    tuned = onnx.load(str(out))
    assert isinstance(_batch_dim(tuned.graph.input[0]), str) and isinstance(_batch_dim(tuned.graph.output[0]), str)
    x = np.random.default_rng(0).standard_normal((5,) + chw).astype(np.float32)
    for n in (1, 5):      # the export runs with any batch size, and equals what edgetune trained
        got = ort_logits(str(out), x[:n])
        assert got.shape == (n, 10)
    from edgetune.runtime.engines.dense import DenseEngine

    eng = DenseEngine()
    eng.load(load_model(out), [])
    assert_close(ort_logits(str(out), x), eng.predict(x), what=f"{exporter}/{batch} export")


@pytest.mark.parametrize("exporter,batch", CASES)
def test_imported_graph_equals_torch_at_other_batch_sizes(exports, exporter, batch):
    module, chw, paths = exports
    model = load_model(paths[exporter, batch])
    assert model.input_shape[0] is None
    from edgetune.runtime.engines import make_engine

    x = np.random.default_rng(1).standard_normal((6,) + chw).astype(np.float32)
    want = module(torch.from_numpy(x)).detach().numpy()
    for engine in ("dense", "native"):
        eng = make_engine(engine)
        eng.load(model, None)
        assert_close(eng.predict(x), want, what=f"{engine} {exporter}/{batch}")


def test_fixed_batch_one_trains_with_batch_size_one(exports, tmp_path):
    _, chw, paths = exports
    data = digits_like(tmp_path / "d.npz", n=12, classes=10, shape=chw)
    out = tmp_path / "b1.onnx"
    result = run_cli("finetune", paths["script", "fixed"], "--data", data, "--epochs", "1", "--batch-size", "1",
                     "--out", out)
    assert result.exit_code == 0, result.output
    assert ort_logits(str(out), np.zeros((3,) + chw, np.float32)).shape == (3, 10)


def _folding_model(path):
    """Conv (1, 4, 4, 4) -> Reshape (4, 16): the batch of 1 is folded into the rows."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([4, 16], np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["flat"], name="fold"),
             helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="head")]
    return save_graph(path, nodes, inits, [1, 1, 4, 4], [4, 10])


def test_batch_folding_reshape_is_one_error_before_training(tmp_path):
    model = _folding_model(tmp_path / "fold.onnx")
    data = digits_like(tmp_path / "d.npz", n=16, shape=(1, 4, 4))
    out = tmp_path / "o.onnx"
    for args in (["info", model], ["finetune", model, "--data", data, "--out", out]):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Reshape node 'fold' mixes the batch dimension" in lines[-1]
        assert "re-export it with a dynamic batch" in lines[-1] and "dynamic_axes" in lines[-1]
        assert "epoch" not in result.output
    assert not out.exists()


def _reshape_3d_model(path):
    """Conv -> Relu -> Reshape (N, 4, 16) -> Flatten -> Gemm: fine for numpy, not for the native kernels."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1, 4, 16], np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((10, 64)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["r3"], name="to3d"),
             helper.make_node("Flatten", ["r3"], ["flat"], name="flat"),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="head", transB=1)]
    return save_graph(path, nodes, inits, ["N", 1, 4, 4], ["N", 10])


def test_info_agrees_with_what_finetune_does(tmp_path):
    model = _reshape_3d_model(tmp_path / "r3.onnx")
    data = digits_like(tmp_path / "d.npz", n=16, shape=(1, 4, 4))
    info = run_cli("info", model)
    assert info.exit_code == 0, info.output
    assert "supported: with --engine dense only (native engine:" in info.output
    native = run_cli("finetune", model, "--data", data, "--epochs", "1", "--out", tmp_path / "n.onnx")
    assert native.exit_code == 1 and "use --engine dense" in native.output and "epoch 1" not in native.output
    dense = run_cli("finetune", model, "--data", data, "--epochs", "1", "--engine", "dense", "--out",
                    tmp_path / "d.onnx")
    assert dense.exit_code == 0, dense.output


def _pad_model(size, kernel, stride, dilation, mode, op):
    rng = np.random.default_rng(0)
    attrs = {"auto_pad": mode, "strides": [stride, stride], "kernel_shape": [kernel, kernel]}
    inits = []
    inputs = ["input"]
    if op == "Conv":
        attrs["dilations"] = [dilation, dilation]
        inits.append(numpy_helper.from_array(rng.standard_normal((3, 2, kernel, kernel)).astype(np.float32), "w"))
        inputs.append("w")
    nodes = [helper.make_node(op, inputs, ["y"], name="p", **attrs)]
    graph = helper.make_graph(nodes, "pad", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           [1, 2, size, size + 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@settings(max_examples=40, deadline=None)
@given(size=st.integers(3, 9), kernel=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       mode=st.sampled_from(["SAME_UPPER", "SAME_LOWER", "VALID"]), op=st.sampled_from(["Conv", "MaxPool"]))
def test_auto_pad_rewrite_equals_onnxruntime(size, kernel, stride, dilation, mode, op):
    from edgetune.runtime.onnx_batch import normalise

    if op == "MaxPool":
        dilation = 1
    span = (kernel - 1) * dilation + 1
    assume(not (span > size and mode == "VALID"))
    # negative SAME padding: onnxruntime refuses the original, so there is no reference
    assume(mode == "VALID" or all((-(-n // stride) - 1) * stride + span >= n for n in (size, size + 1)))
    proto = _pad_model(size, kernel, stride, dilation, mode, op)
    rewritten = normalise(proto, "gen.onnx").proto
    node = rewritten.graph.node[0]
    names = {a.name for a in node.attribute}
    assert "auto_pad" not in names and "pads" in names
    pads = [a for a in node.attribute if a.name == "pads"][0].ints
    assert tuple(pads) == same_pads((size, size + 1), (kernel, kernel), (stride, stride), (dilation, dilation), mode)
    x = np.random.default_rng(size).standard_normal((2, 2, size, size + 1)).astype(np.float32)
    if dilation > 1 and mode != "VALID":
        # onnxruntime refuses dilated SAME convolutions; onnx's own reference implementation runs them
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(proto).run(None, {"input": x[:1]})[0]
    else:
        want = ort_logits(proto.SerializeToString(), x[:1])     # the original only runs with batch 1
    got = ort_logits(rewritten.SerializeToString(), x)
    np.testing.assert_allclose(got[:1], want, rtol=1e-5, atol=1e-5)
