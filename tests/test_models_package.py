"""Tests of the bundled models and datasets (package ``edgetune.models``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import onnx  # noqa: E402  (runtime dependencies: never skipped)
import onnxruntime as ort  # noqa: E402

from edgetune import models  # noqa: E402

ALLOWED_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "HardSwish", "MaxPool",
    "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape",
    "BatchNormalization", "Identity", "Constant", "HardSigmoid", "Mul",
}
EXPECTED_MODELS = {
    "digits_mlp", "digits_cnn", "bench_vgg_relu", "bench_resnet_relu",
    "bench_mobilenet_relu6", "bench_cnn_hardswish", "bench_mobilenetv3_se",
}
EXPECTED_DATASETS = {"digits_source", "digits_shifted", "digits32_color"}

MODEL_NAMES = sorted(e["name"] for e in models.list_models())
DATASET_NAMES = sorted(e["name"] for e in models.list_datasets())


@pytest.fixture(scope="module")
def datasets():
    return {name: models.load_dataset(name) for name in DATASET_NAMES}


def _session(name):
    return ort.InferenceSession(str(models.model_path(name)), providers=["CPUExecutionProvider"])


def _ort_acc(sess, x, y, batch=256):
    preds = [sess.run(["logits"], {"input": x[i:i + batch]})[0].argmax(1)
             for i in range(0, len(x), batch)]
    return float((np.concatenate(preds) == y).mean())


# ------------------------------------------------------------------ catalog

def test_catalog_lists_expected_entries():
    assert set(MODEL_NAMES) == EXPECTED_MODELS
    assert set(DATASET_NAMES) == EXPECTED_DATASETS
    assert len(MODEL_NAMES) == len(models.list_models()), "duplicate model names"
    assert len(DATASET_NAMES) == len(models.list_datasets()), "duplicate dataset names"


def test_defaults():
    assert models.DEFAULT_MODEL == "digits_cnn"
    assert models.DEFAULT_DATA == "digits_shifted"
    cat = models.catalog()
    assert cat["default_model"] == models.DEFAULT_MODEL
    assert cat["default_data"] == models.DEFAULT_DATA
    assert models.is_bundled_model(models.DEFAULT_MODEL)
    assert models.is_bundled_dataset(models.DEFAULT_DATA)
    assert models.model_info(models.DEFAULT_MODEL)["default_data"] == models.DEFAULT_DATA


def test_catalog_matches_json_file():
    on_disk = json.loads((models.MODELS_DIR / "catalog.json").read_text())
    assert models.catalog() == on_disk
    # catalog() hands out copies
    c = models.catalog()
    c["models"].clear()
    assert len(models.list_models()) == len(EXPECTED_MODELS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_entry_is_consistent(name):
    info = models.model_info(name)
    path = models.model_path(name)
    assert path.is_file(), path
    assert path.suffix == ".onnx"
    assert path.parent == models.MODELS_DIR
    assert path.stat().st_size < 2_500_000
    for key in ("description", "input_shape", "num_classes", "default_data", "pretraining",
                "accuracy"):
        assert key in info, key
    assert info["input_shape"][0] is None
    assert all(isinstance(d, int) and d > 0 for d in info["input_shape"][1:])
    assert info["num_classes"] == 10
    assert models.is_bundled_dataset(info["default_data"])
    ds = models.dataset_info(info["default_data"])
    assert ds["input_shape"] == info["input_shape"]


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_dataset_entry_is_consistent(name):
    path = models.dataset_path(name)
    assert path.is_file(), path
    assert path.suffix == ".npz"
    info = models.dataset_info(name)
    for key in ("description", "input_shape", "train_size", "val_size"):
        assert key in info, key


def test_total_size_budget():
    files = [p for p in models.MODELS_DIR.iterdir() if p.suffix in (".onnx", ".npz")]
    assert sum(p.stat().st_size for p in files) < 8_500_000


def test_unknown_names_raise_keyerror_listing_known_names():
    with pytest.raises(KeyError) as ei:
        models.model_path("no_such_model")
    assert "no_such_model" in str(ei.value) and "digits_cnn" in str(ei.value)
    with pytest.raises(KeyError) as ei:
        models.dataset_path("no_such_data")
    assert "no_such_data" in str(ei.value) and "digits_shifted" in str(ei.value)
    assert not models.is_bundled_model("no_such_model")
    assert not models.is_bundled_model("digits_shifted")      # a dataset, not a model
    assert not models.is_bundled_dataset("digits_cnn")
    assert not models.is_bundled_model("models/digits_cnn.onnx")


def test_package_imports_without_torch_or_sklearn():
    code = ("import sys, edgetune.models as m; m.catalog(); m.load_dataset(m.DEFAULT_DATA); "
            "bad = [k for k in ('torch', 'sklearn', 'scipy', 'onnx', 'onnxruntime') "
            "if k in sys.modules]; assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ datasets

@pytest.mark.parametrize("name", DATASET_NAMES)
def test_dataset_arrays(name, datasets):
    d = datasets[name]
    info = models.dataset_info(name)
    shape = tuple(info["input_shape"][1:])
    assert set(d) == {"x", "y", "x_val", "y_val"}
    for xk, yk, n in (("x", "y", info["train_size"]), ("x_val", "y_val", info["val_size"])):
        x, y = d[xk], d[yk]
        assert x.dtype == np.float32, (xk, x.dtype)
        assert y.dtype == np.int64, (yk, y.dtype)
        assert x.shape == (n,) + shape
        assert y.shape == (n,)
        assert np.isfinite(x).all()
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.min() >= 0 and y.max() <= 9
        assert set(np.unique(y)) == set(range(10)), f"{name}.{yk} misses classes"
    if name.startswith("digits_"):
        assert info["val_size"] >= 200
    if name == "digits_shifted":
        assert info["val_size"] >= 300
        assert 500 <= info["train_size"] <= 900


def test_source_and_shifted_domains_differ(datasets):
    src, sh = datasets["digits_source"], datasets["digits_shifted"]
    # the shift raises the black level and adds noise: the background is no longer exactly 0
    assert (src["x"] == 0).mean() > 0.3
    assert (sh["x"] == 0).mean() < 0.2
    assert abs(float(src["x"].mean()) - float(sh["x"].mean())) > 0.02


# ------------------------------------------------------------------ models

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_graph(name):
    m = onnx.load(str(models.model_path(name)))
    onnx.checker.check_model(m)
    ops = [n.op_type for n in m.graph.node]
    assert set(ops) <= ALLOWED_OPS, sorted(set(ops) - ALLOWED_OPS)
    info = models.model_info(name)
    if "onnx_ops" in info:
        assert info["onnx_ops"] == {op: ops.count(op) for op in set(ops)}
    init_names = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in init_names]
    assert [i.name for i in inputs] == ["input"]
    assert [o.name for o in m.graph.output] == ["logits"]
    dims = inputs[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch dim must be symbolic"
    assert [d.dim_value for d in dims[1:]] == info["input_shape"][1:]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_runs_on_default_data(name, datasets):
    info = models.model_info(name)
    d = datasets[info["default_data"]]
    sess = _session(name)
    for n in (32, 1, 7):
        out = sess.run(["logits"], {"input": d["x"][:n]})[0]
        assert out.shape == (n, info["num_classes"])
        assert out.dtype == np.float32
        assert np.isfinite(out).all()


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_model_accuracy_matches_catalog(name, datasets):
    info = models.model_info(name)
    sess = _session(name)
    acc_src = _ort_acc(sess, datasets["digits_source"]["x_val"], datasets["digits_source"]["y_val"])
    acc_sh = _ort_acc(sess, datasets["digits_shifted"]["x_val"], datasets["digits_shifted"]["y_val"])
    assert abs(acc_src - info["accuracy"]["digits_source_val"]) <= 0.005
    assert abs(acc_sh - info["accuracy"]["digits_shifted_val"]) <= 0.005
    # the shift must leave something to fine-tune: good on source, mediocre on shifted
    assert acc_src >= 0.92
    assert 0.45 <= acc_sh <= 0.80
    assert info["finetune_check"]["digits_shifted_val_after"] >= 0.92


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n.startswith("bench_")])
def test_bench_model_accuracy_matches_catalog(name, datasets):
    info = models.model_info(name)
    d = datasets["digits32_color"]
    acc = _ort_acc(_session(name), d["x_val"], d["y_val"])
    assert abs(acc - info["accuracy"]["digits32_color_val"]) <= 0.005
    assert acc > 0.90, "bench models must be trained, not random"
