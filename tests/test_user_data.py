"""Issue 12, items 2 and 3: a new task gets a new head and keeps its label names; data is shown,
not guessed (classes, sizes, conversions, scaling, normalization; bad folders are errors or
counted warnings)."""
import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from helpers import digit_image_folder, digits_like, run_cli, save_graph
from requires import need
from edgetune.runtime import load_model
from edgetune.runtime.data import load_data
from edgetune.runtime.heads import replace_head
from edgetune.runtime.onnx_export import ort_logits

need("PIL.Image")


def _meta(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _lines(text, prefix):
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    """digits_cnn fine-tuned with --num-classes 3 on a tests-built 3-class folder of 32x32 RGB images."""
    tmp = tmp_path_factory.mktemp("pets")
    root = digit_image_folder(tmp / "pets")
    out, rep = tmp / "pets.onnx", tmp / "r.json"
    result = run_cli("finetune", "digits_cnn", "--data", root, "--num-classes", "3", "--epochs", "4",
                     "--out", out, "--report", rep)
    assert result.exit_code == 0, result.output
    return root, out, json.loads(rep.read_text()), result.output


def test_num_classes_trains_a_new_three_class_head(pets):
    _, out, rep, output = pets
    assert "replaced the last layer '/fc/Gemm' (512 -> 10) with a fresh 512 -> 3 layer" in output
    tuned = onnx.load(str(out))
    assert tuned.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 3
    weights = {i.name: numpy_helper.to_array(i) for i in tuned.graph.initializer}
    assert weights["fc.weight"].shape == (3, 512) and weights["fc.bias"].shape == (3,)
    assert rep["after"]["val_acc"] >= 0.85 and rep["after"]["val_acc"] > rep["before"]["val_acc"] + 0.3
    assert ort_logits(str(out), np.zeros((4, 1, 8, 8), np.float32)).shape == (4, 3)


def test_class_names_are_in_the_metadata_and_the_report(pets):
    _, out, rep, _ = pets
    assert json.loads(_meta(out)["classes"]) == ["cat", "dog", "owl"]
    assert rep["classes"] == ["cat", "dog", "owl"]
    info = run_cli("info", out)
    assert "classes: cat, dog, owl" in info.output


def test_eval_maps_outputs_to_the_label_names(pets, tmp_path):
    root, out, rep, _ = pets
    result = run_cli("eval", out, "--data", root)
    assert result.exit_code == 0, result.output
    assert "outputs -> labels (model metadata): 0=cat, 1=dog, 2=owl" in result.output
    for name in ("cat", "dog", "owl"):
        assert any(ln.strip().startswith(name) and "%" in ln for ln in result.output.splitlines()), name
    acc = float(result.output.split("accuracy ")[1].split("%")[0]) / 100
    assert abs(acc - rep["after"]["val_acc"]) < 5e-5
    # a folder with only cat and owl numbers owl 1; eval must still score it against output 2 (owl)
    sub = digit_image_folder(tmp_path / "sub", names=("cat", "owl"), digits=(0, 2), per_class=20, layout="flat")
    ds = load_data(str(sub), (None, 1, 8, 8))
    x = np.concatenate([ds.x, ds.x_val])
    y = np.array([{0: 0, 1: 2}[v] for v in np.concatenate([ds.y, ds.y_val])])
    want = float((ort_logits(str(out), x).argmax(1) == y).mean())
    got = run_cli("eval", out, "--data", sub, "--split", "all")
    assert got.exit_code == 0, got.output
    assert abs(float(got.output.split("accuracy ")[1].split("%")[0]) / 100 - want) < 5e-5
    assert want > 0.8       # numbering owl as output 1 (dog) would score about half


def test_eval_refuses_a_class_the_model_does_not_know(pets, tmp_path):
    _, out, _, _ = pets
    other = digit_image_folder(tmp_path / "o", names=("cat", "emu"), digits=(0, 5), per_class=5, layout="flat")
    result = run_cli("eval", out, "--data", other)
    assert result.exit_code == 1
    assert "class(es) emu are not among" in result.output and "cat, dog, owl" in result.output


def test_replace_head_is_seeded_like_torch_linear():
    a, b, c = load_model("digits_cnn"), load_model("digits_cnn"), load_model("digits_cnn")
    replace_head(a, 4, seed=5)
    replace_head(b, 4, seed=5)
    replace_head(c, 4, seed=6)
    w = a.params["fc.weight"]
    bound = 1 / np.sqrt(512)
    assert w.shape == (4, 512) and a.params["fc.bias"].shape == (4,)
    assert np.abs(w).max() <= bound and np.abs(a.params["fc.bias"]).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound      # uniform on (-bound, bound)
    np.testing.assert_array_equal(w, b.params["fc.weight"])
    assert not np.array_equal(w, c.params["fc.weight"])


def test_fewer_data_classes_than_outputs_is_said_with_what_to_do(tmp_path):
    root = digit_image_folder(tmp_path / "pets", per_class=8)
    result = run_cli("finetune", "digits_cnn", "--data", root, "--epochs", "1", "--out", tmp_path / "o.onnx")
    assert result.exit_code == 0, result.output
    warn = _lines(result.stderr, "warning: ")
    assert any("the data has 3 classes (cat, dog, owl) but digits_cnn has 10 outputs" in w
               and "add --num-classes 3" in w for w in warn), result.stderr


def test_num_classes_needs_a_gemm_head(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["logits"], name="flat")]
    save_graph(tmp_path / "fcn.onnx", nodes, [numpy_helper.from_array(
        rng.standard_normal((10, 1, 3, 3)).astype(np.float32), "w")], ["N", 1, 8, 8], ["N", 10])
    data = digits_like(tmp_path / "d.npz", classes=3)
    result = run_cli("finetune", tmp_path / "fcn.onnx", "--data", data, "--num-classes", "3",
                     "--out", tmp_path / "o.onnx")
    assert result.exit_code == 1
    assert "--num-classes replaces the last Gemm/MatMul layer, but the model ends with a Conv ('conv')" in result.output
    assert not (tmp_path / "o.onnx").exists()


# -- item 3: the data line, layouts, warnings ---------------------------------------------------
def test_image_folder_conversion_is_shown(tmp_path):
    root = digit_image_folder(tmp_path / "pets", per_class=6)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    from PIL import features

    if features.check("webp"):
        digit_image_folder(tmp_path / "pets", names=("owl",), digits=(2,), per_class=3, ext="webp")
    result = run_cli("finetune", "digits_cnn", "--data", root, "--num-classes", "3", "--epochs", "1",
                     "--out", tmp_path / "o.onnx")
    assert result.exit_code == 0, result.output
    (line,) = _lines(result.output, "data: ")
    owls = 9 if features.check("webp") else 6      # 0..2.webp beside 0..5.png
    assert f"image folder, train/ + val/): 3 classes (cat 6, dog 6, owl {owls})" in line, line
    assert "images 32x32 RGB -> 1x8x8 gray (resized, colour -> gray), pixels /255 -> [0, 1]" in line
    warn = _lines(result.stderr, "warning: ")
    assert any("skipped 1 unreadable image file (first: " in w and "broken.png" in w for w in warn), warn
    assert any("ignored 1 file that is not an image (.txt x1" in w for w in warn), warn


def test_flat_folder_holds_out_a_seeded_fifth(tmp_path):
    root = digit_image_folder(tmp_path / "flat", names=("a", "b"), digits=(3, 4), per_class=10, layout="flat",
                              size=8, mode="L")
    ds = load_data(str(root), (None, 1, 8, 8), seed=4)
    assert len(ds.x) == 16 and len(ds.x_val) == 4 and ds.classes == ["a", "b"]
    assert "one subfolder per class" in ds.summary and "20% held out for validation, seed 4" in ds.summary
    assert "images 8x8 L -> 1x8x8 gray, pixels /255" in ds.summary   # nothing to convert: nothing claimed


@pytest.mark.parametrize("case", ["empty class", "val class unknown", "stray folder"])
def test_bad_folders_are_errors_naming_the_folder(tmp_path, case):
    root = digit_image_folder(tmp_path / "pets", per_class=3)
    if case == "empty class":
        for f in (root / "train" / "owl").iterdir():
            f.unlink()
        needle = "class 'owl' has no readable images (the folder is empty)"
    elif case == "val class unknown":
        (root / "val" / "emu").mkdir()
        needle = "class folder(s) emu are not in"
    else:
        (root / "extra").mkdir()
        needle = "use either train/ + val/ subfolders, or one subfolder per class"
    result = run_cli("finetune", "digits_cnn", "--data", root, "--num-classes", "3", "--out", tmp_path / "o.onnx")
    assert result.exit_code == 1, result.output
    (err,) = _lines(result.stderr, "error: ")
    assert needle in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_uint8_arrays_are_scaled_and_said_so(tmp_path):
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    path = tmp_path / "u8.npz"
    np.savez(path, x=x8, y=rng.integers(0, 10, 40))
    ds = load_data(str(path), (None, 1, 8, 8), seed=0)
    assert "uint8 values 0..255 scaled by 1/255 -> [0, 1]" in ds.summary
    order = np.random.default_rng(0).permutation(40)
    np.testing.assert_array_equal(ds.x_val, x8[order[:8]].astype(np.float32) / np.float32(255))
    assert ds.x.max() <= 1.0
    ints = tmp_path / "i32.npz"
    np.savez(ints, x=x8.astype(np.int32), y=rng.integers(0, 10, 40))
    result = run_cli("finetune", "digits_cnn", "--data", ints, "--out", tmp_path / "o.onnx")
    assert result.exit_code == 1
    assert "array 'x' has dtype int32; give float32 values (already scaled) or uint8 pixels" in result.output


def test_npz_class_names_travel_to_the_export(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.random((60, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 60),
             classes=np.array(["red", "green", "blue"]))
    out = tmp_path / "o.onnx"
    result = run_cli("finetune", "digits_cnn", "--data", data, "--num-classes", "3", "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert "3 classes (red " in result.output
    assert json.loads(_meta(out)["classes"]) == ["red", "green", "blue"]


def test_normalize_is_applied_stored_and_reused_by_eval(tmp_path):
    ds = load_data("digits_shifted", (None, 1, 8, 8), normalize=[0.5, 0.25])
    raw = load_data("digits_shifted", (None, 1, 8, 8))
    np.testing.assert_allclose(ds.x_val, (raw.x_val - 0.5) / 0.25, rtol=1e-6)
    out, rep = tmp_path / "n.onnx", tmp_path / "r.json"
    result = run_cli("finetune", "--epochs", "1", "--normalize", "0.5,0.25", "--out", out, "--report", rep)
    assert result.exit_code == 0, result.output
    assert "normalized per channel with mean (0.5) std (0.25)" in result.output
    assert json.loads(_meta(out)["normalize"]) == {"mean": [0.5], "std": [0.25]}
    ev = run_cli("eval", out, "--data", "digits_shifted")
    assert "normalization from the model's metadata" in ev.output
    acc = float(ev.output.split("accuracy ")[1].split("%")[0]) / 100
    assert abs(acc - json.loads(rep.read_text())["after"]["val_acc"]) < 5e-5


@pytest.mark.parametrize("value,needle", [("1,2,3", "give MEAN,STD, or C means then C stds"),
                                          ("0.5,0", "the stds must be positive"),
                                          ("a,b", "expected numbers"),
                                          ("0.1,0.2,0.3,1,1,1", "3 means and 3 stds given, but the data has 1 channels")])
def test_bad_normalize_is_a_usage_error(tmp_path, value, needle):
    result = run_cli("finetune", "--normalize", value, "--out", tmp_path / "o.onnx")
    assert result.exit_code == 2, result.output
    (err,) = _lines(result.stderr, "error: ")
    assert needle in err
    assert not (tmp_path / "o.onnx").exists()


def test_image_install_hint_is_from_a_checkout():
    import pathlib

    from edgetune.runtime.images import PILLOW_HINT

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert 'pip install ".[images]"' in readme and "edgetune[images]" not in readme
    assert 'pip install ".[images]"' in PILLOW_HINT
