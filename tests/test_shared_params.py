"""Initializers that several nodes read: every engine sums their readers' gradients.

torch's exporters store equal tensors once. In eval mode BatchNorm folds into the convs and,
while the statistics are fresh, the folded biases of one width are equal, so one initializer
feeds several convs, directly or through Identity (a torchvision resnet18 export has four such).
Tied weights are real too. The generative differential tests (test_native_generated.py) draw
shared parameters; this file holds the fixed cases, the torch oracle and the tie policy.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_close
from requires import need, need_exporter
from edgetune.runtime import load_model, ties
from edgetune.runtime.engines.dense import DenseEngine
from edgetune.runtime.engines.native import NativeEngine
from edgetune.runtime.onnx_export import export_onnx, ort_logits

# every engine that computes gradients, at several thread counts and both kernel modes
ENGINES = {"dense": lambda: DenseEngine(), "native-1": lambda: NativeEngine(threads=1),
           "native-2": lambda: NativeEngine(threads=2), "native-4": lambda: NativeEngine(threads=4),
           "native-dense-3": lambda: NativeEngine(threads=3, dense=True)}


def _grads(model, x, y, make):
    eng = make()
    eng.load(model, model.trainable_names())
    return eng.loss_and_grads(x, y)


def _tied_graph(identity: bool):
    """conv(w1, b) -> relu -> conv(w2, b) -> relu -> GAP -> gemm(fw, b) -> relu -> gemm(fw, fb) -> gemm(fo, fob).

    `b` is read by three nodes in two roles (conv bias, Gemm bias), `fw` by two Gemms as their
    weight; with `identity` the second and third readers read them through Identity nodes."""
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.standard_normal((4, 3, 3, 3)) * 0.4, "w2": rng.standard_normal((4, 4, 3, 3)) * 0.3,
              "b": rng.standard_normal(4) * 0.2, "fw": rng.standard_normal((4, 4)) * 0.6,
              "fb": rng.standard_normal(4) * 0.1, "fo": rng.standard_normal((5, 4)), "fob": np.zeros(5)}
    nodes = []

    def read(name, k):
        if not identity or k == 0:
            return name
        nodes.append(helper.make_node("Identity", [name], [f"{name}_id{k}"]))
        return f"{name}_id{k}"

    nodes += [helper.make_node("Conv", ["x", "w1", read("b", 0)], ["c1"], pads=[1] * 4),
              helper.make_node("Relu", ["c1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w2", read("b", 1)], ["c2"], pads=[1] * 4),
              helper.make_node("Relu", ["c2"], ["r2"]),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", read("fw", 0), read("b", 2)], ["h1"], transB=1),
              helper.make_node("Relu", ["h1"], ["a1"]),
              helper.make_node("Gemm", ["a1", read("fw", 1), "fb"], ["h2"], transB=1),
              helper.make_node("Gemm", ["h2", "fo", "fob"], ["out"], transB=1)]
    return nodes, arrays


def _untied_graph():
    """The same function with every reader's parameter a tensor of its own (the oracle's graph)."""
    nodes, arrays = _tied_graph(identity=False)
    copies = iter(["b", "b_2", "b_3"])
    weights = iter(["fw", "fw_2"])
    for n in nodes:
        n.input[:] = [next(copies) if i == "b" else next(weights) if i == "fw" else i for i in n.input]
    arrays.update({"b_2": arrays["b"], "b_3": arrays["b"], "fw_2": arrays["fw"]})
    return nodes, arrays


def _save(path, nodes, arrays):
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), k) for k, a in arrays.items()]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return str(path)


def _batch(n=9):
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, 3, 6, 6)).astype(np.float32), rng.integers(0, 5, n)


def _reference(tmp_path):
    """float64 gradients of the untied graph: what each reader contributes."""
    model = load_model(_save(tmp_path / "untied.onnx", *_untied_graph()))
    eng = DenseEngine(dtype=np.float64)
    eng.load(model, model.trainable_names())
    return eng.loss_and_grads(*_batch())


@pytest.mark.parametrize("identity", [False, True], ids=["direct", "through-identity"])
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_shared_initializer_gets_the_sum_of_its_readers_gradients(tmp_path, identity, engine):
    model = load_model(_save(tmp_path / "tied.onnx", *_tied_graph(identity)))
    assert sorted(model.params) == ["b", "fb", "fo", "fob", "fw", "w1", "w2"]   # Identity adds no parameter
    ref_loss, ref = _reference(tmp_path)
    loss, grads = _grads(model, *_batch(), ENGINES[engine])
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    want = {k: v for k, v in ref.items() if k[-2:] not in ("_2", "_3")}
    want["b"] = ref["b"] + ref["b_2"] + ref["b_3"]
    want["fw"] = ref["fw"] + ref["fw_2"]
    assert set(grads) == set(want)
    for k, g in want.items():
        assert_close(grads[k], g, what=f"{engine} d{k}")


def test_untie_gives_each_reader_its_own_copy(tmp_path):
    path = _save(tmp_path / "tied.onnx", *_tied_graph(identity=True))
    tied, untied = load_model(path), load_model(path, untie=True)
    assert any(n.startswith("tied: 2 initializers") for n in tied.notes)
    assert any(n.startswith("untied: 2 initializers") for n in untied.notes)
    assert sorted(untied.params) == ["b", "b__untied1", "b__untied2", "fb", "fo", "fob", "fw", "fw__untied1",
                                     "w1", "w2"]
    ref_loss, ref = _reference(tmp_path)
    renamed = {"b__untied1": "b_2", "b__untied2": "b_3", "fw__untied1": "fw_2"}
    for engine in ("dense", "native-2"):
        loss, grads = _grads(untied, *_batch(), ENGINES[engine])
        for k, g in grads.items():
            assert_close(g, ref[renamed.get(k, k)], what=f"{engine} untied d{k}")
    # the untied file computes what the tied one does, until training moves the copies apart
    x, _ = _batch()
    out = tmp_path / "untied-export.onnx"
    export_onnx(untied, untied.params, str(out))
    assert {i.name for i in onnx.load(str(out)).graph.initializer} >= {"b__untied1", "fw__untied1"}
    assert np.allclose(ort_logits(str(out), x), ort_logits(path, x), atol=1e-5)


def test_a_bias_shared_with_a_frozen_statistic_is_split(tmp_path):
    """A conv bias that a BatchNorm also reads as its running mean: training moves the bias, and
    the statistic, which edgetune never trains, keeps its own copy."""
    rng = np.random.default_rng(2)
    arrays = {"w": rng.standard_normal((4, 3, 3, 3)) * 0.4, "z": rng.standard_normal(4) * 0.1,
              "s": np.ones(4), "bb": np.zeros(4), "v": np.ones(4) * 1.5, "fo": rng.standard_normal((5, 4))}
    nodes = [helper.make_node("Conv", ["x", "w", "z"], ["c"], pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "z", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fo"], ["out"], transB=1)]
    model = load_model(_save(tmp_path / "clash.onnx", nodes, arrays))
    assert any(n.startswith("split: initializer 'z'") for n in model.notes)
    bn = next(n for n in model.nodes if n.op == "batchnorm")
    assert bn.params["mean"] == "z__frozen" and "z" in model.trainable_names()
    eng = NativeEngine(threads=2)
    eng.load(model, model.trainable_names())
    for _ in range(3):
        eng.train_step(*_batch())
    params = eng.get_params()
    assert not np.array_equal(params["z"], arrays["z"].astype(np.float32))
    assert np.array_equal(params["z__frozen"], arrays["z"].astype(np.float32))


def test_device_engine_trains_a_tie_as_the_dense_engine_does(tmp_path):
    """The emulated device (hosting the native kernels) against the dense reference, over three
    SGD-with-momentum steps: each tied tensor moves by the summed gradient."""
    import os

    from edgetune.runtime.engines import make_engine
    from edgetune.runtime.optim import OptimizerConfig

    model = load_model(_save(tmp_path / "tied.onnx", *_tied_graph(identity=True)))
    cfg = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9)
    load = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    dev, ref = make_engine("device", device="emulator", timeout=30.0, timeout_scale=load), DenseEngine()
    try:
        for eng in (dev, ref):
            eng.load(model, None, cfg)
            for step in range(3):
                eng.train_step(*_batch(8 + step))
        got, want = dev.get_params(), ref.get_params()
    finally:
        dev.close()
    for k in want:
        assert_close(got[k] - model.params[k], want[k] - model.params[k], what=f"device update of {k}")


def test_accelerator_counts_the_gradient_merge(tmp_path):
    from edgetune.firmware_bridge.accel_model import AccelModel

    model = load_model(_save(tmp_path / "tied.onnx", *_tied_graph(identity=True)))
    acc = AccelModel(model, model.trainable_names())
    assert acc.merge_elems == 2 * 4 + 1 * 16    # b: three readers, fw (4x4): two


def test_info_names_the_tie_and_finetune_keeps_the_choice_on_resume(tmp_path):
    from click.testing import CliRunner

    from edgetune.runtime.cli import cli

    path = _save(tmp_path / "tied.onnx", *_tied_graph(identity=True))
    x, y = _batch(40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    r = CliRunner().invoke(cli, ["info", path])
    assert r.exit_code == 0 and "import: tied: 2 initializers are each read by several nodes" in r.output
    ck = tmp_path / "ck"
    args = ["finetune", path, "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--checkpoint", str(ck),
            "--out", str(tmp_path / "o.onnx")]
    r = CliRunner().invoke(cli, args + ["--untie-params"])
    assert r.exit_code == 0, r.output
    assert "b__untied2" in {i.name for i in onnx.load(str(tmp_path / "o.onnx")).graph.initializer}
    r = CliRunner().invoke(cli, args + ["--resume", "--epochs", "2"])
    assert r.exit_code == 2 and "untie_params" in r.stderr


@pytest.mark.parametrize("exporter", ["script", "dynamo"])
@pytest.mark.parametrize("name", ["resnet_style", "mnasnet_style"])
def test_bn_folded_exports_against_autograd(tmp_path, name, exporter):
    """resnet18- and mnasnet-style modules exported in eval mode with a batch-1 dummy input (the
    BN-folded, deduplicated form): every engine against autograd on the fused module, the
    gradients of the torch parameters the exporter merged summed."""
    need("torch")
    need_exporter(exporter)
    import torch_bn_folded
    import torch_zoo

    module = torch_bn_folded.build(name)
    chw = torch_bn_folded.MODELS[name][1]
    model = load_model(torch_zoo.export(module, chw, tmp_path / f"{name}.onnx", exporter, batch="fixed"))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7,) + chw).astype(np.float32)
    y = rng.integers(0, 5, 7)
    ref_loss, ref, owners = torch_bn_folded.tied_oracle(module, model.params, x, y)
    tied = {k: v for k, v in owners.items() if len(v) > 1}
    assert tied, "the export was meant to tie equal folded biases"
    assert set(tied) == set(ties.trained_ties(model))
    for engine, make in ENGINES.items():
        loss, grads = _grads(model, x, y, make)
        assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss), engine
        assert set(grads) == set(ref)
        for k, g in ref.items():
            assert_close(grads[k], g, what=f"{name}/{exporter} {engine} d{k} (read by {len(owners[k])})")
