"""The op registry (runtime/ops): every engine runs what the registry lists, and what it cannot
import is one clear error naming the op and the node (issue 19)."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

from helpers import digits_like, run_cli, save_graph
from edgetune.firmware_bridge.device_core import SUPPORTED_OPS
from edgetune.runtime import load_model, ops
from edgetune.runtime.errors import ModelError

IMPORT_ONLY = ("constant", "dropout", "softmax", "logsoftmax")   # they leave no IR node to train


def test_every_trained_op_has_every_form():
    for name, op in ops.OPS.items():
        assert op.rule and op.cost, name
        if name in IMPORT_ONLY:
            continue
        cls = type(op)
        for method in ("forward", "backward", "torch"):
            assert getattr(cls, method) is not getattr(ops.Op, method), f"{name} has no {method}"
        assert name in SUPPORTED_OPS, f"the emulated device does not list {name}"


def test_the_importer_takes_exactly_the_registered_onnx_ops():
    assert set(ops.supported_onnx()) == set(ops.ONNX)
    for t in ("Concat", "Mul", "Split", "Slice", "Transpose", "Sigmoid", "HardSigmoid", "ReduceMean"):
        assert ops.onnx_op(t) is not None, t


def _conv_then(path, tail_nodes, tail_inits=(), out_shape=("N", 4, 4, 4)):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")] + list(tail_inits)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])] + list(tail_nodes)
    return save_graph(path, nodes, inits, ["N", 2, 4, 4], list(out_shape))


def test_a_transpose_that_is_no_channel_shuffle_is_named(tmp_path):
    path = _conv_then(tmp_path / "t.onnx", [helper.make_node("Transpose", ["c"], ["logits"], name="to_nhwc",
                                                             perm=[0, 2, 3, 1])])
    with pytest.raises(ModelError, match="Transpose node 'to_nhwc' .*only the Transpose of a channel shuffle"):
        load_model(path)


def test_an_unsupported_op_is_named_not_a_reexport_hint(tmp_path):
    # an op of another domain before a Reshape: shape inference cannot see through it, and the
    # error must name the op rather than tell the user to re-export with a dynamic batch
    shape = numpy_helper.from_array(np.array([1, 64], np.int64), "shape")
    path = _conv_then(tmp_path / "u.onnx", [
        helper.make_node("Gelu", ["c"], ["g"], name="mystery", domain="com.example"),
        helper.make_node("Reshape", ["g", "shape"], ["logits"], name="flat")], [shape], out_shape=(1, 64))
    data = digits_like(tmp_path / "d.npz", n=8, shape=(2, 4, 4))
    for args in (["info", path], ["finetune", path, "--data", data, "--epochs", "1"]):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("error: ") and "unsupported op com.example.Gelu in node 'mystery'" in last
        assert "dynamic batch" not in last and "Traceback" not in result.output


@pytest.mark.parametrize("case", ["mul_const", "concat_axis", "split_axis"])
def test_out_of_reach_forms_of_the_new_ops_are_clear_errors(tmp_path, case):
    k = numpy_helper.from_array(np.full((1, 4, 1, 1), 2.0, np.float32), "k")
    sizes = numpy_helper.from_array(np.array([2, 2], np.int64), "sizes")
    nodes, inits, want = {
        "mul_const": ([helper.make_node("Mul", ["c", "k"], ["logits"], name="scale")], [k],
                      "Mul node 'scale': multiplying by a constant"),
        "concat_axis": ([helper.make_node("Concat", ["c", "c"], ["logits"], name="cat", axis=2)], [],
                        "Concat node 'cat': only the channel axis"),
        "split_axis": ([helper.make_node("Split", ["c", "sizes"], ["logits", "b"], name="sp", axis=3)], [sizes],
                       "Split node 'sp': only a split of the channel axis"),
    }[case]
    with pytest.raises(ModelError, match=want):
        load_model(_conv_then(tmp_path / f"{case}.onnx", nodes, inits))
