"""Engines behind one seam; see base.Engine for the contract."""
from __future__ import annotations

from ..errors import UsageError

ENGINES = ("native", "dense", "device")


def make_engine(name: str, **kwargs):
    """Instantiate the engine called `name` (imports are lazy to keep start-up fast)."""
    if name == "dense":
        from .dense import DenseEngine

        return DenseEngine()
    if name == "native":
        from .native import NativeEngine

        return NativeEngine(**kwargs)
    if name == "device":
        from .device import DeviceEngine

        return DeviceEngine(**kwargs)
    raise UsageError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
