"""Training data: bundled names, .npz files and image folders, validated before training."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm")


@dataclass
class Dataset:
    """Training and validation arrays: x float32 (N, ...), y int64 (N,)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load_data(spec: str, input_shape: Tuple[Optional[int], ...] = (), val_fraction: float = 0.2,
              seed: int = 0) -> Dataset:
    """Load `spec` (bundled name, .npz path or image folder) without checking it against a model."""
    from edgetune import models

    if os.path.isdir(spec):
        arrays = _load_image_folder(spec, input_shape)
    elif os.path.exists(spec):
        arrays = _load_npz(spec)
    elif models.is_bundled_dataset(spec):
        arrays = _load_npz(str(models.dataset_path(spec)))
    else:
        raise DataError(f"{spec}: no such data file, folder or bundled dataset (see 'edgetune models')")
    x, y = arrays["x"], arrays["y"]
    if "x_val" in arrays and "y_val" in arrays:
        xv, yv = arrays["x_val"], arrays["y_val"]
    else:
        if len(x) < 2:
            raise DataError(f"{spec}: needs at least 2 samples to hold some out for validation")
        order = np.random.default_rng(seed).permutation(len(x))
        cut = max(1, int(round(len(x) * val_fraction)))
        xv, yv, x, y = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    return Dataset(spec, *(_as_float(a, spec, k) if k.startswith("x") else a
                           for k, a in (("x", x), ("y", y), ("x_val", xv), ("y_val", yv))))


def _as_float(a, spec, key):
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{spec}: array {key!r} has dtype {a.dtype}; expected numbers")
    return a.astype(np.float32, copy=False)


def _load_npz(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        raise DataError(f"{path}: cannot read arrays without pickle ({exc})") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{path}: give both 'x_val' and 'y_val', or neither")
    return arrays


def _load_image_folder(root: str, input_shape) -> dict:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("image folders need Pillow: pip install 'edgetune[images]'") from None
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"{root}: an image folder needs one subfolder per class; found none")
    if len(input_shape) != 4 or None in input_shape[1:]:
        raise DataError(f"{root}: image folders need a model with a fixed (N, C, H, W) input")
    c, h, w = input_shape[1:]
    xs, ys = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        for fname in sorted(os.listdir(folder)):
            if not fname.lower().endswith(IMAGE_EXTS):
                continue
            path = os.path.join(folder, fname)
            try:
                with Image.open(path) as im:
                    im = im.convert("L" if c == 1 else "RGB").resize((w, h))
                    arr = np.asarray(im, np.float32) / 255.0
            except Exception as exc:
                raise DataError(f"{path}: unreadable image ({type(exc).__name__})") from None
            xs.append(arr[None] if c == 1 else arr.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise DataError(f"{root}: no images found in the class subfolders")
    return {"x": np.stack(xs), "y": np.array(ys, np.int64)}


def validate(ds: Dataset, input_shape, num_classes: Optional[int] = None) -> None:
    """Check shapes, finiteness and (given num_classes) the label range; raise DataError on the first problem."""
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
        if ys.ndim != 1 or not np.issubdtype(ys.dtype, np.integer):
            raise DataError(f"{ds.name}: {part} labels must be a 1-D integer array, got {ys.dtype} {ys.shape}")
        if num_classes is not None and (ys.min() < 0 or ys.max() >= num_classes):
            raise DataError(f"{ds.name}: {part} labels span {ys.min()}..{ys.max()}, "
                            f"outside the model's {num_classes} classes (0..{num_classes - 1})")


def _fmt(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
