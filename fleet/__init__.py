"""edgetune.fleet: federated fine-tuning of many devices on Flower (docs/FLEET.md).

The Flower parts (client_app.py, server_app.py, strategy.py, processes.py) need the optional
extra `pip install "edgetune[fleet]"` (Flower 1.42, Python 3.11 or newer). task.py,
partition.py and packing.py import no Flower and work everywhere.
"""
from __future__ import annotations

import os
import sys

from edgetune.runtime.errors import EdgetuneError

MIN_PYTHON = (3, 11)
FLOWER_SPEC = "flwr[simulation]==1.42.*"


class FleetError(EdgetuneError):
    """A fleet run could not start, or ended without a usable result."""


def python_version() -> tuple:
    return tuple(sys.version_info[:2])


def require_flower() -> None:
    """Raise FleetError, saying what to do, unless Python and Flower can run a fleet here."""
    here = python_version()
    if here < MIN_PYTHON:
        raise FleetError(f"edgetune fleet needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (Flower 1.42 does); "
                         f"this is Python {here[0]}.{here[1]}")
    # Flower's telemetry and update check would reach the network; a user's explicit setting wins
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise FleetError('edgetune fleet needs Flower: pip install "edgetune[fleet]"') from None
