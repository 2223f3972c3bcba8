"""Reading a data .npz with bounded memory: each array's .npy header (shape and dtype) is read
and checked before its data, so a header that claims 2^31 samples or a zip bomb (a small file
that decompresses to gigabytes) is refused before anything is allocated (README, "Your data").

Only the arrays edgetune uses are read (x, y, x_val, y_val, classes); others are left unread."""
from __future__ import annotations

import zipfile
from typing import Dict

import numpy as np

from .errors import DataError
from .input_files import regular_file_size

ARRAYS = ("x", "y", "x_val", "y_val", "classes")
# All arrays of one data file together: 2^27 values, 512 MiB once converted to float32. Loading
# then peaks near twice that (the arrays and their train/val split), under 2 GiB in all.
MAX_DATA_VALUES = 1 << 27
_KINDS = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "floating point", "U": "text", "S": "bytes"}


def read_npz(path: str) -> Dict[str, np.ndarray]:
    """The arrays of ARRAYS present in `path`, after their headers passed the checks."""
    regular_file_size(path, DataError, "data")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({_why(exc)})") from None
    with archive:
        members = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
        headers = {k: _header(archive, members[k], path, k) for k in ARRAYS if k in members}
        total = sum(int(np.prod(shape, dtype=np.float64)) for shape, _ in headers.values())
        if total > MAX_DATA_VALUES:
            raise DataError(f"{path}: its arrays hold {total:,} values; a data file may hold at most "
                            f"{MAX_DATA_VALUES:,} (512 MiB as float32)")
        out = {}
        for key, (shape, dtype) in headers.items():
            try:
                with archive.open(members[key]) as fp:
                    out[key] = np.lib.format.read_array(fp, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - zlib, CRC, truncation: one clear line
                raise DataError(f"{path}: array {key!r} is unreadable ({_why(exc)})") from None
            if out[key].shape != shape:
                raise DataError(f"{path}: array {key!r} does not hold what its header declares")
    return out


def _header(archive, member: str, path: str, key: str):
    """(shape, dtype) from the .npy header of `member`, checked: a known version, a plain dtype
    (no objects, no structured or datetime arrays) and at most MAX_DATA_VALUES values."""
    fmt = np.lib.format
    try:
        with archive.open(member) as fp:
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, _fortran, dtype = fmt.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _fortran, dtype = fmt.read_array_header_2_0(fp)
            else:
                raise ValueError(f"npy format version {version[0]}.{version[1]}")
    except Exception as exc:  # noqa: BLE001 - bad magic, a header that is not a dict, bad UTF-8, ...
        raise DataError(f"{path}: array {key!r} has an unreadable .npy header ({_why(exc)})") from None
    if dtype.kind == "O" or dtype.hasobject:
        raise DataError(f"{path}: array {key!r} holds Python objects; edgetune reads arrays without pickle "
                        "(numbers, or strings for 'classes')")
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{path}: array {key!r} has dtype {dtype}; expected numbers (or strings for 'classes')")
    if any(not 0 <= d <= MAX_DATA_VALUES for d in shape) or np.prod(shape, dtype=np.float64) > MAX_DATA_VALUES:
        raise DataError(f"{path}: array {key!r} declares shape {shape}; a data file may hold at most "
                        f"{MAX_DATA_VALUES:,} values")
    return tuple(shape), dtype


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
