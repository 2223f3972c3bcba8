"""Engines behind one seam; see base.Engine for the contract."""
from __future__ import annotations

from ..errors import UsageError

ENGINES = ("native", "dense", "device")


def engine_class(name: str):
    """The Engine subclass called `name` (imports are lazy to keep start-up fast)."""
    if name == "dense":
        from .dense import DenseEngine

        return DenseEngine
    if name == "native":
        from .native import NativeEngine

        return NativeEngine
    if name == "device":
        from .device import DeviceEngine

        return DeviceEngine
    raise UsageError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


def make_engine(name: str, **options):
    """Instantiate the engine called `name` with `options`; an option the engine does not declare
    (Engine.options) is a UsageError naming it, never silently ignored."""
    cls = engine_class(name)
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        takes = f"it takes {', '.join(cls.options)}" if cls.options else "it takes none"
        raise UsageError(f"the {name} engine has no option {', '.join(unknown)} ({takes})")
    return cls(**options)
