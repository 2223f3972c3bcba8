"""JSON files: read with a one-line error naming what is wrong, written atomically (numpy values as
plain numbers)."""
from __future__ import annotations

import json

import numpy as np

from .atomic import atomic_write


def read_json(path: str, what: str, kind: str, error):
    """The JSON value in `path`; an `error` (an EdgetuneError class) starting with `what` when the
    file is missing or is not JSON. `kind` names the file in the message ("report", "file")."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{what}: no such {kind}" + ("" if kind == "file" else " file")) from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what}: not a readable JSON {kind} ({type(exc).__name__}: {exc})") from None


def write_json(path: str, value) -> None:
    """Write `value` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(value, f, indent=2, default=_plain)
        f.write("\n")


def _plain(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
