"""The native engine against the dense reference (and torch where installed): whole models,
both exporters, both kernel modes, frozen layers, and sparsity extremes."""
import numpy as np
import pytest

from conftest import assert_close
from requires import need_exporter
from oracle import check_native
from edgetune.runtime import load_model, compute_gradients
from edgetune.runtime.data import load_data
from edgetune.runtime.engines import make_engine

BUNDLED = ["digits_mlp", "digits_cnn", "bench_vgg_relu", "bench_resnet_relu", "bench_mobilenet_relu6",
           "bench_cnn_hardswish", "bench_mobilenetv3_se"]


def _batch(name, n=6):
    model = load_model(name)
    ds = load_data("digits32_color" if name.startswith("bench") else "digits_shifted", model.input_shape)
    return model, ds.x[:n], ds.y[:n]


def _compare(model, x, y, **native_kw):
    """Loss, every gradient (tie-aware, up to summation order) and the logits against the dense engine."""
    eng = check_native(model, x, y, **native_kw)
    assert_close(eng.predict(x), _dense_logits(model, x), what="logits")
    return eng


def _dense_logits(model, x):
    eng = make_engine("dense")
    eng.load(model)
    return eng.predict(x)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_models_match_dense(name, dense, threads):
    """The bench batch itself (32 samples, near-ties included: bench_cnn_hardswish has a max-pool
    window whose two largest values differ by 5e-7, where float64 sides with numpy and the
    native kernels' rounding picks the other pixel; the tie-aware reference accepts either)."""
    model, x, y = _batch(name, 32)
    _compare(model, x, y, dense=dense, threads=threads)


@pytest.mark.parametrize("exporter", ["script", "dynamo"])
@pytest.mark.parametrize("name", ["mlp_relu", "cnn_relu6_strided", "dw_hardswish_maxpool_gap",
                                  "residual_add_leaky", "mixed_avgpool_sigmoid", "bn_pools_softmax"])
def test_torch_exported_models_match_dense_and_torch(zoo_export, name, exporter):
    need_exporter(exporter)
    import torch_zoo

    module, chw, path = zoo_export(name, exporter)
    model = load_model(path)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5,) + chw).astype(np.float32)
    y = rng.integers(0, 3, 5)
    _compare(model, x, y)
    eng = make_engine("native")
    eng.load(model)
    loss, grads = eng.loss_and_grads(x, y)
    ref_loss, ref = torch_zoo.torch_loss_and_grads(module, x, y)
    assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
    for k in ref:
        assert_close(grads[k], ref[k], what=f"torch {k}")


def test_all_zero_input_and_dead_relus():
    model, x, y = _batch("digits_cnn")
    _compare(model, np.zeros_like(x), y)                        # 100% input sparsity
    dead = load_model("digits_cnn")
    for name in dead.params:
        if name.endswith("bias") and not name.startswith("fc"):
            dead.params[name][:] = -100.0                          # every ReLU output zero
    _compare(dead, x, y)


def test_frozen_layers_get_no_gradient_and_match():
    model, x, y = _batch("bench_resnet_relu")
    trainable = model.trainable_names("last:2")
    ref = make_engine("dense")
    ref.load(model, trainable)
    eng = make_engine("native")
    eng.load(model, trainable)
    (_, g_ref), (_, g) = ref.loss_and_grads(x, y), eng.loss_and_grads(x, y)
    assert set(g) == set(g_ref) == set(trainable)
    for k in g:
        assert_close(g[k], g_ref[k], what=k)


def test_training_steps_track_dense_engine():
    model, x, y = _batch("digits_cnn", 32)
    engines = []
    for name in ("dense", "native"):
        e = make_engine(name)
        e.load(model)
        for _ in range(5):
            e.train_step(x, y)
        engines.append(e.get_params())
    for k in engines[0]:
        assert_close(engines[1][k], engines[0][k], rtol=1e-4, what=k)


def test_counters_required_equals_layer_stats_definition():
    from edgetune.runtime.report import measure_layers

    model, x, y = _batch("bench_resnet_relu", 8)
    eng = make_engine("native")
    eng.load(model)
    step = eng.measure_step(x, y)
    rows = measure_layers(model, model.params, model.trainable_names(), x, y, "cross_entropy")
    for phase in ("fp", "bp", "wg"):
        assert step["macs_required"][phase] == sum(r["macs_required"][phase] for r in rows), phase
        assert step["macs_dense"][phase] == sum(r["macs_dense"][phase] for r in rows), phase
    dense = make_engine("native", dense=True)
    dense.load(model)
    executed = dense.measure_step(x, y)["macs_executed"]
    for phase in ("fp", "bp", "wg"):   # dense iteration executes everything, plus vector-tail lanes
        assert step["macs_dense"][phase] <= executed[phase] <= 1.01 * step["macs_dense"][phase], phase
        # the sparse run executes at least what the constraints require and never more than the
        # dense run (a layer whose operands are too dense to skip runs the tiled kernels, which
        # execute the dense products)
        assert step["macs_required"][phase] <= step["macs_executed"][phase] <= executed[phase], phase


@pytest.mark.parametrize("name", ["bench_vgg_relu", "bench_resnet_relu", "digits_cnn"])
def test_relu_layers_store_compressed_activations(name):
    model, x, y = _batch(name, 16)
    eng = make_engine("native")
    eng.load(model)
    eng.loss_and_grads(x, y)
    checked = 0
    for lay in eng.layers.values():
        info = lay.k.output_info
        if lay.act is None or lay.act.op != "relu":
            continue
        dense, sparsity = info.dense_bytes(), info.sparsity
        assert 0 < sparsity < 1
        assert info.stored_bytes() <= (1 - sparsity) * dense + dense / 32 + 256, lay.node.name
        checked += 1
    assert checked >= 2


def test_nearly_dense_activations_are_planned_densely_and_stay_exact():
    """bench_cnn_hardswish is 99.5% non-zero: from the second step its hard-swish outputs are
    planned densely (no lists); the gradients still equal the dense engine's, and with
    auto_dense=False (or on a 50%-sparse ReLU model) nothing is planned densely."""
    model, x, y = _batch("bench_cnn_hardswish", 8)
    ref_loss, ref = compute_gradients(model, x, y, engine="dense")
    eng = make_engine("native")
    eng.load(model)
    eng.loss_and_grads(x, y)
    hswish_outputs = {n.output for n in model.nodes if n.op == "hardswish"}
    assert set(eng.dense_planned()) == hswish_outputs
    loss, grads = eng.loss_and_grads(x, y)   # this step runs with the dense plans
    assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
    for k in ref:
        assert_close(grads[k], ref[k], what=k)
    off = make_engine("native", auto_dense=False)
    off.load(model)
    off.loss_and_grads(x, y)
    assert off.dense_planned() == []
    relu_model, xr, yr = _batch("bench_vgg_relu", 8)
    relu = make_engine("native")
    relu.load(relu_model)
    relu.loss_and_grads(xr, yr)
    assert relu.dense_planned() == []


def test_phase_times_split_the_backward_call():
    """One backward call per layer: the kernel's own FP/BP/WG clocks feed phase_medians."""
    model, x, y = _batch("bench_resnet_relu", 8)
    eng = make_engine("native")
    eng.load(model)
    eng.loss_and_grads(x, y)
    for lay in eng.layers.values():
        ph = lay.k.phase_ms()
        assert set(ph) == {"fp", "bp", "wg"} and min(ph.values()) >= 0.0
        assert ph["fp"] > 0.0 and ph["wg"] > 0.0   # every layer is trainable and ran both
    med = eng.phase_medians(x, y, 3)
    assert set(med) == {"fp", "bp", "wg"} and all(v > 0 for v in med.values())
