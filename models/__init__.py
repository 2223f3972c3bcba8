"""Bundled ONNX models and datasets of edgetune.

The files live next to this module (``*.onnx``, ``*.npz`` and ``catalog.json``)
and were produced offline by ``build_models.py`` in the same folder. This module
only reads them, with the standard library and numpy; it never imports torch or
scikit-learn.

Every dataset file is an ``.npz`` with ``x`` (float32, NCHW), ``y`` (int64,
0..9), ``x_val`` and ``y_val``. Every model takes ``input`` (float32, NCHW,
symbolic batch dimension) and returns ``logits`` of shape (batch, 10).

>>> from edgetune import models
>>> models.model_path(models.DEFAULT_MODEL).name
'digits_cnn.onnx'
"""
from __future__ import annotations

import copy
import json
import pathlib
from functools import lru_cache

import numpy as np

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_DATA",
    "MODELS_DIR",
    "catalog",
    "list_models",
    "list_datasets",
    "model_path",
    "dataset_path",
    "is_bundled_model",
    "is_bundled_dataset",
    "model_info",
    "dataset_info",
    "load_dataset",
]

#: Name of the model that ``edgetune finetune`` uses when none is given.
DEFAULT_MODEL = "digits_cnn"
#: Name of the dataset that ``edgetune finetune`` uses when none is given.
DEFAULT_DATA = "digits_shifted"

#: Folder holding the bundled files (works installed and from a source checkout).
MODELS_DIR = pathlib.Path(__file__).resolve().parent
_CATALOG_FILE = MODELS_DIR / "catalog.json"


@lru_cache(maxsize=1)
def _load_catalog() -> dict:
    try:
        text = _CATALOG_FILE.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"bundled model catalog not found at {_CATALOG_FILE}; "
            "rebuild it with `python models/build_models.py`") from None
    return json.loads(text)


def catalog() -> dict:
    """Return the parsed ``catalog.json`` (a fresh copy; mutating it is harmless).

    Keys: ``models`` and ``datasets`` (lists of dicts), ``default_model``,
    ``default_data`` and build metadata.
    """
    return copy.deepcopy(_load_catalog())


def list_models() -> list[dict]:
    """Return the catalog entries of all bundled models (name, file, input_shape, ...)."""
    return catalog()["models"]


def list_datasets() -> list[dict]:
    """Return the catalog entries of all bundled datasets (name, file, sizes, ...)."""
    return catalog()["datasets"]


def _entry(kind: str, name: str) -> dict:
    entries = _load_catalog()[kind]
    for e in entries:
        if e["name"] == name:
            return e
    known = ", ".join(e["name"] for e in entries)
    what = "model" if kind == "models" else "dataset"
    raise KeyError(f"unknown bundled {what} {name!r}; known {kind}: {known}")


def model_info(name: str) -> dict:
    """Return the catalog entry of the bundled model ``name``.

    Raises ``KeyError`` (listing the known names) if there is no such model.
    """
    return copy.deepcopy(_entry("models", name))


def dataset_info(name: str) -> dict:
    """Return the catalog entry of the bundled dataset ``name``.

    Raises ``KeyError`` (listing the known names) if there is no such dataset.
    """
    return copy.deepcopy(_entry("datasets", name))


def model_path(name: str) -> pathlib.Path:
    """Return the path of the bundled ONNX model ``name`` (e.g. ``"digits_cnn"``).

    Raises ``KeyError`` (listing the known names) if there is no such model.
    """
    return MODELS_DIR / _entry("models", name)["file"]


def dataset_path(name: str) -> pathlib.Path:
    """Return the path of the bundled ``.npz`` dataset ``name`` (e.g. ``"digits_shifted"``).

    Raises ``KeyError`` (listing the known names) if there is no such dataset.
    """
    return MODELS_DIR / _entry("datasets", name)["file"]


def is_bundled_model(name: str) -> bool:
    """Return True if ``name`` is the name of a bundled model (not a file path)."""
    return isinstance(name, str) and any(e["name"] == name for e in _load_catalog()["models"])


def is_bundled_dataset(name: str) -> bool:
    """Return True if ``name`` is the name of a bundled dataset (not a file path)."""
    return isinstance(name, str) and any(e["name"] == name for e in _load_catalog()["datasets"])


def load_dataset(name: str) -> dict[str, np.ndarray]:
    """Load the bundled dataset ``name`` into memory.

    Returns a dict with ``x`` (float32, NCHW), ``y`` (int64), ``x_val`` and
    ``y_val``. Raises ``KeyError`` (listing the known names) if unknown.
    """
    with np.load(dataset_path(name), allow_pickle=False) as f:
        return {k: f[k] for k in ("x", "y", "x_val", "y_val")}
