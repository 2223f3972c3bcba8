"""Image folders as training data: one subfolder per class, optionally under train/ and val/.

Nothing is guessed silently: the loader returns, beside the arrays, what it found
(classes, images per class, source sizes and colour modes) and what it did to fit
the model (resizing, colour conversion, scaling), and it counts the files it could
not use. An empty class is an error.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import List, Optional, Tuple

import numpy as np

from .errors import DataError
from .input_files import not_regular
from .npz import MAX_DATA_VALUES

MAX_IMAGE_PIXELS = 1 << 24     # one source image (4096 x 4096), checked before it is decoded

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".pbm", ".webp", ".tif", ".tiff")
TRAIN_DIRS = ("train", "training")
VAL_DIRS = ("val", "valid", "validation")
PILLOW_HINT = 'image folders need Pillow: pip install ".[images]" in the edgetune checkout (or pip install pillow)'


def _subdirs(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder) if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def split_layout(root: str) -> Tuple[str, Optional[str]]:
    """(train folder, val folder or None): ROOT/train + ROOT/val when present, else ROOT itself."""
    subs = _subdirs(root)
    train = next((os.path.join(root, d) for d in subs if d.lower() in TRAIN_DIRS), None)
    if train is None:
        return root, None
    val = next((os.path.join(root, d) for d in subs if d.lower() in VAL_DIRS), None)
    others = [d for d in subs if d.lower() not in TRAIN_DIRS + VAL_DIRS]
    if others:
        raise DataError(f"{root}: has {os.path.basename(train)}/ and also {', '.join(others)}/; use either "
                        "train/ + val/ subfolders, or one subfolder per class")
    return train, val


def load_image_folder(root: str, input_shape) -> dict:
    """Arrays x, y (and x_val, y_val with a val/ folder), classes, and a record of the conversion."""
    try:
        from PIL import Image  # noqa: F401
    except ImportError:
        raise DataError(PILLOW_HINT) from None
    if len(input_shape) != 4 or None in input_shape[1:]:
        raise DataError(f"{root}: image folders need a model with a fixed (N, C, H, W) input")
    c, h, w = input_shape[1:]
    if c not in (1, 3):
        raise DataError(f"{root}: image folders need a model with 1 (gray) or 3 (RGB) input channels, not {c}")
    train_dir, val_dir = split_layout(root)
    classes = _subdirs(train_dir)
    if not classes:
        raise DataError(f"{train_dir}: an image folder needs one subfolder per class; found none")
    seen = {"sizes": Counter(), "modes": Counter(), "unreadable": [], "ignored": []}
    out = {"classes": classes, "layout": "train/ + val/" if val_dir else "one subfolder per class"}
    out["x"], out["y"], out["per_class"] = _read_split(train_dir, classes, (c, h, w), seen, required=True)
    if val_dir:
        extra = sorted(set(_subdirs(val_dir)) - set(classes))
        if extra:
            raise DataError(f"{val_dir}: class folder(s) {', '.join(extra)} are not in {train_dir}")
        out["x_val"], out["y_val"], out["per_class_val"] = _read_split(val_dir, classes, (c, h, w), seen,
                                                                       required=False)
        if len(out["x_val"]) == 0:
            raise DataError(f"{val_dir}: no images found in its class subfolders")
    out["conversion"] = _describe(seen, (c, h, w))
    out["warnings"] = _warnings(seen)
    return out


def _image_files(folder, classes, seen):
    """[(label, class folder, [image paths])] in class order; other files are noted as ignored."""
    out = []
    for label, cls in enumerate(classes):
        path = os.path.join(folder, cls)
        names = sorted(os.listdir(path)) if os.path.isdir(path) else []
        files = []
        for fname in names:
            fpath = os.path.join(path, fname)
            if fname.startswith(".") or os.path.isdir(fpath):
                continue
            if not fname.lower().endswith(IMAGE_EXTS):
                seen["ignored"].append(fpath)
                continue
            files.append(fpath)
        out.append((label, path, names, files))
    return out


def _read_split(folder, classes, chw, seen, required: bool):
    c, h, w = chw
    listed = _image_files(folder, classes, seen)
    n_files = sum(len(files) for *_, files in listed)
    if n_files * c * h * w > MAX_DATA_VALUES:
        raise DataError(f"{folder}: {n_files:,} images of {c}x{h}x{w} would hold {n_files * c * h * w:,} values; "
                        f"a data set may hold at most {MAX_DATA_VALUES:,} (512 MiB as float32)")
    xs, ys, counts = [], [], []
    for label, path, names, files in listed:
        n = 0
        for fpath in files:
            try:
                arr = _read_image(fpath, c, h, w, seen)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
                text = str(exc).strip().splitlines()
                seen["unreadable"].append(f"{fpath} ({type(exc).__name__}{': ' + text[0][:120] if text else ''})")
                continue
            xs.append(arr[None] if c == 1 else arr.transpose(2, 0, 1))
            ys.append(label)
            n += 1
        if n == 0 and (required or os.path.isdir(path)):
            raise DataError(f"{path}: class {classes[label]!r} has no readable images" +
                            (f" ({len(names)} files, none usable)" if names else " (the folder is empty)"))
        counts.append(n)
    x = np.stack(xs) if xs else np.zeros((0, c, h, w), np.float32)
    return x, np.array(ys, np.int64), counts


def _read_image(fpath, c, h, w, seen) -> np.ndarray:
    """One image as float32 (h, w) or (h, w, 3) in [0, 1], scaled by its bit depth: 8-bit
    channels by 1/255, 16-bit gray (Pillow's I;16 modes) by 1/65535, which Pillow's own
    conversion to 8 bits would clip at 255. 32-bit modes (I, F) have no known range: refused."""
    from PIL import Image

    kind = not_regular(fpath)
    if kind is not None:          # a FIFO would block the read forever
        raise ValueError(f"{kind}, not a regular file")
    with warnings.catch_warnings():
        # Pillow warns of large images and of palette transparency: the size is checked below
        # (before decoding), and the conversion is described in the data line
        warnings.simplefilter("ignore")
        with Image.open(fpath) as im:
            if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                raise ValueError(f"{im.size[0]}x{im.size[1]} pixels; at most {MAX_IMAGE_PIXELS:,} per image")
            if im.mode in ("I", "F"):
                raise ValueError(f"mode {im.mode} (32-bit pixels) has no known range; save it as 8- or 16-bit")
            im.load()
            seen["sizes"][im.size] += 1
            seen["modes"][im.mode] += 1
            if im.mode.startswith("I;16"):
                gray = Image.fromarray(np.asarray(im).astype(np.float32) / np.float32(65535.0))  # mode F
                if gray.size != (w, h):
                    gray = gray.resize((w, h), Image.BILINEAR)
                arr = np.asarray(gray, np.float32)
                return arr if c == 1 else np.repeat(arr[:, :, None], 3, axis=2)
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            return np.asarray(im, np.float32) / np.float32(255.0)


def _describe(seen, chw) -> str:
    c, h, w = chw
    sizes = seen["sizes"]
    if len(sizes) == 1:
        (sw, sh), = sizes
        src = f"{sw}x{sh}"
    else:
        src = f"{len(sizes)} sizes ({min(sizes)[0]}x{min(sizes)[1]} .. {max(sizes)[0]}x{max(sizes)[1]})"
    modes = "/".join(sorted(seen["modes"]))
    target = "gray" if c == 1 else "RGB"
    steps = []
    if any(s != (w, h) for s in sizes):
        steps.append("resized")
        if any(abs(sw / sh - w / h) > 0.02 for sw, sh in sizes):
            steps.append("aspect ratio changed")
    gray_src = {m for m in seen["modes"] if m in ("L", "1") or m.startswith("I;16")}
    if c == 1 and set(seen["modes"]) - gray_src:
        steps.append("colour -> gray")
    if c == 3 and gray_src:
        steps.append("gray -> RGB (channel repeated)")
    if "RGBA" in seen["modes"] or "LA" in seen["modes"]:
        steps.append("alpha dropped")
    how = f" ({', '.join(steps)})" if steps else ""
    eight = [m for m in seen["modes"] if not m.startswith("I;16")]
    scale = "/255"
    if len(eight) < len(seen["modes"]):
        scale = "/65535 (16-bit)" + (" and /255 (8-bit)" if eight else "")
    return f"images {src} {modes} -> {c}x{h}x{w} {target}{how}, pixels {scale} -> [0, 1]"


def _warnings(seen) -> List[str]:
    out = []
    if seen["unreadable"]:
        n = len(seen["unreadable"])
        out.append(f"skipped {n} unreadable image file{'s' if n > 1 else ''} (first: {seen['unreadable'][0]})")
    if seen["ignored"]:
        n = len(seen["ignored"])
        exts = Counter(os.path.splitext(p)[1].lower() or "(no extension)" for p in seen["ignored"])
        kinds = ", ".join(f"{k} x{v}" for k, v in exts.most_common(4))
        out.append(f"ignored {n} file{'s' if n > 1 else ''} that {'are' if n > 1 else 'is'} not an image "
                   f"({kinds}; images are {', '.join(IMAGE_EXTS)})")
    return out


def per_class_text(classes: List[str], counts: List[int], limit: int = 12) -> str:
    """'cat 10, dog 12' (or a min..max range for many classes)."""
    if len(classes) <= limit:
        return ", ".join(f"{c} {n}" for c, n in zip(classes, counts))
    return f"{min(counts)}..{max(counts)} per class"


def counts_by_label(y: np.ndarray, k: int) -> List[int]:
    return np.bincount(np.asarray(y, np.int64), minlength=k)[:k].tolist() if len(y) else [0] * k
