"""Issue 22, section 3: what a new user hit. Each test names its item; the report figures (items
7, 8, 9, 11) are in tests/test_report_figures.py."""
import os
import sys

import numpy as np
import onnx
import pytest

from helpers import assert_bad_input, digits_like, run_cli, tiny_mlp


@pytest.fixture
def job(tmp_path):
    """A tiny model and data: finetune runs in about a second on the dense engine."""
    return tiny_mlp(tmp_path / "m.onnx"), digits_like(tmp_path / "d.npz", n=48)


def _finetune(model, data, *extra):
    return run_cli("finetune", model, "--data", data, "--epochs", "1", "--engine", "dense", *extra)


# -- item 1: --resume without a checkpoint -------------------------------------------------------

@pytest.mark.parametrize("make_folder", [False, True])
def test_resume_without_a_checkpoint_is_an_error(tmp_path, job, make_folder):
    ck = tmp_path / "chekpoint"                    # a typo: the run's folder is ck/
    if make_folder:
        ck.mkdir()
    result = _finetune(*job, "--checkpoint", ck, "--resume", "--out", tmp_path / "o.onnx")
    want = f"--resume: no checkpoint in {ck} (no checkpoint.npz)" if make_folder else \
        f"--resume: the checkpoint folder {ck} does not exist"
    assert_bad_input(result, want, codes=(2,))
    assert "epoch 1/1" not in result.output and not (tmp_path / "o.onnx").exists()
    assert os.listdir(ck) == [] if make_folder else not ck.exists()


# -- item 2: every output path is checked before training ------------------------------------------

def _unwritable_cases(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    a_folder = tmp_path / "folder"
    a_folder.mkdir()
    cases = {
        "--out under a file": (["--out", a_file / "x.onnx"], f"{a_file} is a file"),
        "--report is a folder": (["--report", a_folder], "is a folder; give a file path"),
        "--checkpoint is a file": (["--checkpoint", a_file], "is a file, not a folder"),
        "--out is a device": (["--out", os.devnull], "exists and is not a regular file"),
        "--report and --checkpoint the same": (["--report", tmp_path / "r", "--checkpoint", tmp_path / "r"],
                                               "--report and --checkpoint are the same path"),
    }
    if sys.platform.startswith("linux"):      # root passes every access() check; /proc still refuses new names
        cases["--out in /proc (the issue's repro)"] = (["--out", "/proc/nope/x.onnx"],
                                                       "--out /proc/nope/x.onnx: cannot create the folder /proc/nope")
        cases["--report in /proc"] = (["--report", "/proc/r.json"],
                                      "--report /proc/r.json: cannot write a file in /proc")
        cases["--checkpoint in /proc"] = (["--checkpoint", "/proc/nope/ck"], "--checkpoint /proc/nope/ck: cannot")
    return cases


def test_every_output_path_is_checked_before_training(tmp_path, job):
    for name, (args, needle) in _unwritable_cases(tmp_path).items():
        result = run_cli("finetune", job[0], "--data", job[1], "--epochs", "3", "--engine", "dense", *args)
        assert_bad_input(result, needle, codes=(2,))
        assert "epoch 1/3" not in result.output, name          # refused before the first epoch
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".edgetune-probe-")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
@pytest.mark.parametrize("command", [["report", "REPORT", "--plot", "/proc/nope/p.png"],
                                     ["bench", "digits_mlp", "--steps", "1", "--json", "/proc/nope/b.json"],
                                     ["simulate", "digits_mlp", "--json", "/proc/nope/s.json"]])
def test_other_commands_check_their_outputs_first(tmp_path, command):
    report = tmp_path / "r.json"
    report.write_text('{"model": "m", "engine": "dense", "before": {}, "after": {}, "history": [], "layers": [], '
                      '"macs": {}}')
    result = run_cli(*[report if a == "REPORT" else a for a in command])
    assert_bad_input(result, f"{command[-2]} {command[-1]}: cannot create the folder /proc/nope", codes=(2,))
    assert "ms" not in result.stdout           # nothing was timed, drawn or simulated


def test_a_writable_new_folder_is_not_created_by_the_check(tmp_path, job):
    """The check probes and removes its probe: a run that then fails leaves no folder behind."""
    bad = digits_like(tmp_path / "bad.npz", shape=(1, 9, 9))
    result = run_cli("finetune", job[0], "--data", bad, "--engine", "dense", "--out", tmp_path / "new" / "o.onnx")
    assert result.exit_code == 1
    assert sorted(os.listdir(tmp_path)) == ["bad.npz", "d.npz", "m.onnx"]


# -- item 3: --engine device without --device says it uses the emulator ----------------------------

def test_device_engine_without_device_says_it_trains_on_the_emulator(tmp_path, job):
    result = run_cli("finetune", job[0], "--data", job[1], "--epochs", "1", "--engine", "device",
                     "--out", tmp_path / "o.onnx")
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("device: ")]
    assert "--device not given, so the steps run on the bundled emulator" in line
    assert "--device /dev/ttyUSB0" in line


def test_device_line_names_what_was_asked_for():
    from edgetune.runtime.trainer import device_line

    assert device_line("emulator").startswith("device: the bundled emulator")
    assert device_line("socket://127.0.0.1:7000") == "device: socket://127.0.0.1:7000"


# -- item 4: messages that sent the user the wrong way ---------------------------------------------

def test_a_single_file_that_is_no_npz_is_named_for_what_it_is(tmp_path, job):
    from PIL import Image

    png, csv, npy = tmp_path / "x.png", tmp_path / "x.csv", tmp_path / "x.npz"
    Image.new("L", (8, 8)).save(png)
    csv.write_text("a,b\n1,2\n")
    np.save(tmp_path / "a.npy", np.zeros(3))
    os.replace(tmp_path / "a.npy", npy)                     # an .npy under an .npz name
    for path, needle in ((png, "a single image; give a folder of images with one subfolder per class"),
                         (csv, "a CSV file; save the inputs and labels as arrays x and y with numpy.savez"),
                         (npy, "a single .npy array")):
        for command in (["finetune", job[0]], ["eval", job[0]]):
            result = run_cli(*command, "--data", path)
            assert_bad_input(result, f"{path}: {needle}", codes=(1,))
            assert "pickle" not in result.output


def test_eval_without_data_is_a_usage_error(job):
    result = run_cli("eval", job[0])
    assert result.exit_code == 2
    assert "Missing option '--data'" in result.output and "None" not in result.output


def test_eval_does_not_suggest_an_option_it_lacks(tmp_path, job):
    more = digits_like(tmp_path / "twelve.npz", n=48, classes=12, y=np.arange(48) % 12)
    result = run_cli("eval", job[0], "--data", more)
    assert_bad_input(result, "outside the model's 10 classes", codes=(1,))
    assert "add --num-classes" not in result.output
    assert "edgetune finetune ... --num-classes 12" in result.output
    trained = _finetune(job[0], more, "--out", tmp_path / "o.onnx")      # finetune keeps its own advice
    assert "add --num-classes 12" in trained.output


# -- item 5: the default output name -----------------------------------------------------------------

def test_default_output_names_the_data(tmp_path, monkeypatch, job):
    model, data = job
    monkeypatch.chdir(tmp_path)
    other = digits_like(tmp_path / "other.npz", n=48, seed=1)
    assert _finetune(model, data).exit_code == 0
    first = (tmp_path / "m-d-finetuned.onnx").read_bytes()
    result = _finetune(model, other)
    assert result.exit_code == 0, result.output
    assert "wrote m-other-finetuned.onnx" in result.output
    assert (tmp_path / "m-d-finetuned.onnx").read_bytes() == first       # the first run's file is untouched


def test_default_output_of_other_data_with_the_same_name_is_refused(tmp_path, monkeypatch, job):
    model = job[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = digits_like(tmp_path / "a" / "train.npz", n=48, seed=1)
    b = digits_like(tmp_path / "b" / "train.npz", n=48, seed=2)
    out = tmp_path / "m-train-finetuned.onnx"
    assert _finetune(model, a).exit_code == 0
    again = _finetune(model, a, "--seed", "1")                 # the same model and data again: replaced
    assert again.exit_code == 0, again.output
    kept = out.read_bytes()
    result = _finetune(model, b)
    assert_bad_input(result, f"m-train-finetuned.onnx already exists and holds a fine-tune of {model} on {a}; "
                             f"this run fine-tunes {model} on {b}. Give --out", codes=(2,))
    assert "epoch 1/1" not in result.output and out.read_bytes() == kept
    explicit = _finetune(model, b, "--out", out)               # naming the file replaces it
    assert explicit.exit_code == 0, explicit.output
    assert out.read_bytes() != kept


def test_default_output_never_replaces_a_file_edgetune_did_not_write(tmp_path, monkeypatch, job):
    model, data = job
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m-d-finetuned.onnx").write_bytes(b"my own notes")
    result = _finetune(model, data)
    assert_bad_input(result, "holds a file that edgetune finetune did not write", codes=(2,))
    assert (tmp_path / "m-d-finetuned.onnx").read_bytes() == b"my own notes"


def test_the_exported_file_says_what_it_was_fine_tuned_from(tmp_path, job):
    import json

    model, data = job
    assert _finetune(model, data, "--out", tmp_path / "o.onnx").exit_code == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "o.onnx")).metadata_props}
    assert json.loads(meta["finetuned_from"]) == {"model": str(model), "data": str(data)}
