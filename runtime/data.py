"""Training data: bundled names, .npz files and image folders, validated before training.

Every loader also says what it found and what it did (`Dataset.summary`, one line) and
what it skipped (`Dataset.warnings`), so a conversion is shown rather than guessed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import DataError, UsageError
from .images import counts_by_label, load_image_folder, per_class_text

MAX_CLASSES = 1 << 16
# Inputs are scaled data (pixels in [0, 1], standardized features). Beyond this magnitude a
# float32 forward pass on weights of a trained model (|w| of order 1, fan-in up to 10^6) could
# exceed 10^12 per layer and a squared error 10^24: training then overflows instead of learning.
MAX_INPUT_MAGNITUDE = 1e6


@dataclass
class Dataset:
    """Training and validation arrays: x float32 (N, ...), y int64 (N,); class names when known."""

    name: str
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: Optional[List[str]] = None
    summary: str = ""
    warnings: List[str] = field(default_factory=list)
    normalize: Optional[dict] = None

    def num_classes(self) -> int:
        """Declared class names, else the largest label + 1."""
        if self.classes:
            return len(self.classes)
        ys = [a for a in (self.y, self.y_val) if len(a)]
        return int(max(int(a.max()) for a in ys)) + 1 if ys else 0


def load_data(spec: str, input_shape: Tuple[Optional[int], ...] = (), val_fraction: float = 0.2,
              seed: int = 0, normalize: Optional[Sequence[float]] = None) -> Dataset:
    """Load `spec` (bundled name, .npz path or image folder) without checking it against a model.
    `normalize` is (mean, std) or (means..., stds...) per channel, applied after scaling to [0, 1]."""
    from edgetune import models

    spec = str(spec)
    notes: List[str] = []
    if os.path.isdir(spec):
        arrays = load_image_folder(spec, input_shape)
        kind = f"image folder, {arrays['layout']}"
        notes.append(arrays["conversion"])
    elif os.path.exists(spec):
        _check_is_npz(spec)
        arrays, kind = _load_npz(spec), ".npz"
    elif models.is_bundled_dataset(spec):
        arrays, kind = _load_npz(str(models.dataset_path(spec))), "bundled"
    else:
        raise DataError(f"{spec}: no such data file, folder or bundled dataset (see 'edgetune models')")
    check_arrays(arrays, spec)
    x, y = arrays["x"], arrays["y"]
    if "x_val" in arrays and "y_val" in arrays:
        xv, yv = arrays["x_val"], arrays["y_val"]
        split = ""
    else:
        if len(x) < 2:
            raise DataError(f"{spec}: needs at least 2 samples to hold some out for validation")
        order = np.random.default_rng(seed).permutation(len(x))
        cut = max(1, int(round(len(x) * val_fraction)))
        xv, yv, x, y = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
        split = f" ({round(100 * val_fraction)}% held out for validation, seed {seed})"
    if not kind.startswith("image"):
        notes.append(_value_note(arrays["x"], spec))
    x, xv = (_as_float(a, spec, k) for a, k in ((x, "x"), (xv, "x_val")))
    ds = Dataset(spec, x, y, xv, yv, classes=arrays.get("classes"), warnings=list(arrays.get("warnings", [])))
    if normalize is not None:
        ds.normalize = apply_normalize(ds, normalize)
        notes.append(f"normalized per channel with mean {_fmt_list(ds.normalize['mean'])} "
                     f"std {_fmt_list(ds.normalize['std'])}")
    k = ds.num_classes() if len(y) else 0
    names = ds.classes or [str(i) for i in range(k)]
    per_class = per_class_text(names, counts_by_label(y, k)) if k else "no samples"
    ds.summary = (f"data: {spec} ({kind}): {k} classes ({per_class}); {len(x)} train / {len(xv)} val{split}; "
                  + "; ".join(notes))
    return ds


def check_arrays(arrays: dict, spec: str) -> None:
    """Ranks, lengths and label values of x, y (and x_val, y_val), checked before anything is split,
    counted or converted; labels become int64 (a label above MAX_CLASSES would make per-class
    counts allocate for every class up to it)."""
    for xk, yk in (("x", "y"), ("x_val", "y_val")):
        if xk not in arrays:
            continue
        x, y = arrays[xk], arrays[yk]
        if x.ndim < 2:
            raise DataError(f"{spec}: array {xk!r} has shape {x.shape}; expected one sample per row: (N, features) "
                            "or (N, C, H, W)")
        if not np.prod(x.shape[1:]):
            raise DataError(f"{spec}: array {xk!r} has shape {x.shape}: its samples hold no values")
        if y.ndim != 1:
            raise DataError(f"{spec}: array {yk!r} has shape {y.shape}; labels are a 1-D array of class indices, "
                            "one per sample")
        if y.dtype.kind not in "iu":
            raise DataError(f"{spec}: array {yk!r} has dtype {y.dtype}; labels are integer class indices 0, 1, 2, ...")
        if len(x) != len(y):
            raise DataError(f"{spec}: {len(x)} inputs but {len(y)} labels (arrays {xk!r} and {yk!r})")
        if len(y) and y.min() < 0:
            raise DataError(f"{spec}: array {yk!r} has negative labels (lowest {y.min()}); labels are "
                            "class indices 0, 1, 2, ...")
        if len(y) and y.max() >= MAX_CLASSES:
            raise DataError(f"{spec}: array {yk!r} has a label of {y.max()}; labels are class indices below "
                            f"{MAX_CLASSES:,} (the most classes edgetune trains)")
        arrays[yk] = y.astype(np.int64)


def _value_note(x: np.ndarray, spec: str) -> str:
    if x.dtype == np.uint8:
        return "uint8 values 0..255 scaled by 1/255 -> [0, 1]"
    if x.size and np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all():
        return f"{x.dtype} values in [{float(x.min()):.3g}, {float(x.max()):.3g}], used as given"
    return f"{x.dtype} values, used as given"


def _as_float(a, spec, key):
    if a.dtype == np.uint8:      # 8-bit images: the usual 0..255 pixels, scaled like image folders
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype == np.bool_ or (np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{spec}: array {key!r} has dtype {a.dtype}; give float32 values (already scaled) "
                        "or uint8 pixels 0..255 (scaled by 1/255)")
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{spec}: array {key!r} has dtype {a.dtype}; expected real numbers")
    with np.errstate(over="ignore"):     # float64 beyond float32's range becomes inf: validate() names it
        return a.astype(np.float32, copy=False)


_NOT_DATA = {  # what a data path that is no .npz turned out to be, and what to give instead
    "image": "a single image; give a folder of images with one subfolder per class (README, \"Your data\")",
    "csv": "a CSV file; save the inputs and labels as arrays x and y with numpy.savez (README, \"Your data\")",
    "npy": "a single .npy array; save the inputs and labels as arrays x and y with numpy.savez",
}
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pnm", ".pgm", ".ppm", ".webp", ".tif", ".tiff")


def _check_is_npz(path: str) -> None:
    """An .npz is a zip archive: anything else is named for what it is, before numpy reads it
    (numpy would take it for a pickle and advise allow_pickle)."""
    if not os.path.isfile(path):
        return      # not a regular file (a FIFO would block this read): the loader's checks name it
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return      # the loader's own error names the problem
    if head.startswith(b"PK"):
        return
    ext = os.path.splitext(path)[1].lower()
    kind = ("npy" if head.startswith(b"\x93NUMPY") else "image" if ext in _IMAGE_EXTENSIONS
            else "csv" if ext in (".csv", ".tsv", ".txt") else None)
    what = (_NOT_DATA[kind] if kind
            else "not an .npz file (a zip of arrays x and y), an image folder or a bundled dataset")
    raise DataError(f"{path}: {what}")


def _load_npz(path: str) -> dict:
    from .npz import read_npz

    arrays = read_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{path}: give both 'x_val' and 'y_val', or neither")
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{path}: 'classes' must be a 1-D array of strings, got {names.dtype} {names.shape}")
        try:
            arrays["classes"] = [str(n.decode() if isinstance(n, bytes) else n) for n in names.tolist()]
        except UnicodeDecodeError:
            raise DataError(f"{path}: 'classes' holds bytes that are not UTF-8 text") from None
        if len(set(arrays["classes"])) != len(arrays["classes"]):
            raise DataError(f"{path}: 'classes' has duplicate names")
    return arrays


def parse_normalize(text: str) -> List[float]:
    """'MEAN,STD' or 'M1,M2,M3,S1,S2,S3' -> floats (checked against the channels later)."""
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise UsageError(f"--normalize {text!r}: expected numbers MEAN,STD (or one mean per channel "
                         "then one std per channel)") from None
    if len(vals) < 2 or len(vals) % 2:
        raise UsageError(f"--normalize {text!r}: give MEAN,STD, or C means then C stds")
    if any(not np.isfinite(v) for v in vals) or any(v <= 0 for v in vals[len(vals) // 2:]):
        raise UsageError(f"--normalize {text!r}: the stds must be positive finite numbers")
    return vals


def apply_normalize(ds: Dataset, values: Sequence[float]) -> dict:
    """(x - mean) / std per channel (axis 1) on both splits; returns {'mean': [...], 'std': [...]}."""
    channels = ds.x.shape[1] if ds.x.ndim >= 2 else 1
    half = len(values) // 2
    mean, std = list(values[:half]), list(values[half:])
    if half == 1:
        mean, std = mean * channels, std * channels
    elif half != channels:
        raise UsageError(f"--normalize: {half} means and {half} stds given, but the data has {channels} channels")
    shape = (1, channels) + (1,) * max(ds.x.ndim - 2, 0)
    m, s = np.asarray(mean, np.float32).reshape(shape), np.asarray(std, np.float32).reshape(shape)
    ds.x = ((ds.x - m) / s).astype(np.float32)
    ds.x_val = ((ds.x_val - m) / s).astype(np.float32)
    return {"mean": mean, "std": std}


def _fmt_list(v) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


def validate(ds: Dataset, input_shape, num_classes: Optional[int] = None, new_head_hint: bool = True) -> None:
    """Check shapes, finiteness and (given num_classes) the label range; raise DataError on the first problem.
    `new_head_hint`: a label out of range suggests finetune's --num-classes (not for eval, which has none)."""
    for xs, ys, part in ((ds.x, ds.y, "training"), (ds.x_val, ds.y_val, "validation")):
        if len(xs) == 0:
            raise DataError(f"{ds.name}: the {part} set is empty")
        if len(xs) != len(ys):
            raise DataError(f"{ds.name}: {part} set has {len(xs)} inputs but {len(ys)} labels")
        if xs.ndim != len(input_shape):
            raise DataError(f"{ds.name}: {part} inputs have rank {xs.ndim} (shape {xs.shape[1:]} per sample); "
                            f"the model expects rank {len(input_shape)} {_fmt(input_shape)}")
        for got, want in zip(xs.shape[1:], input_shape[1:]):
            if want is not None and got != want:
                raise DataError(f"{ds.name}: {part} sample shape {xs.shape[1:]} does not match the model "
                                f"input {_fmt(input_shape)}")
        if not np.isfinite(xs).all():
            bad = int((~np.isfinite(xs)).reshape(len(xs), -1).any(axis=1).sum())
            raise DataError(f"{ds.name}: {part} inputs contain NaN or Inf values ({bad} samples)")
        peak = float(np.abs(xs).max(initial=0.0))
        if peak > MAX_INPUT_MAGNITUDE:
            raise DataError(f"{ds.name}: {part} inputs reach {peak:.3g}; edgetune trains on scaled inputs "
                            f"(|x| <= {MAX_INPUT_MAGNITUDE:g}: pixels in [0, 1], standardized features): rescale the "
                            "data or give --normalize MEAN,STD")
        if ys.ndim != 1 or not np.issubdtype(ys.dtype, np.integer):
            raise DataError(f"{ds.name}: {part} labels must be a 1-D integer array, got {ys.dtype} {ys.shape}")
        if ds.classes and (ys.min() < 0 or ys.max() >= len(ds.classes)):
            raise DataError(f"{ds.name}: {part} labels span {ys.min()}..{ys.max()}, but 'classes' names "
                            f"{len(ds.classes)} classes")
        if num_classes is not None and (ys.min() < 0 or ys.max() >= num_classes):
            k = ds.num_classes()
            if ys.min() < 0:
                hint = ""
            elif new_head_hint:
                hint = f"; to train a new {k}-class last layer add --num-classes {k}"
            else:
                hint = f"; fine-tune it for these labels first (edgetune finetune ... --num-classes {k})"
            raise DataError(f"{ds.name}: {part} labels span {ys.min()}..{ys.max()}, "
                            f"outside the model's {num_classes} classes (0..{num_classes - 1}){hint}")


def _fmt(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
