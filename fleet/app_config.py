"""The Flower app folder that `flwr run DIR <superlink>` takes, written by edgetune itself
(`flwr new` would need the network).

The folder holds one pyproject.toml. Its components point at the installed
`edgetune.fleet` package, so the app bundle (FAB) that Flower ships to the SuperLink and the
SuperNodes carries no code; every machine of the fleet has edgetune installed instead, and
runtime dependency installation stays off. `[tool.flwr.app.config]` lists every run setting
(task.RunSettings) with its value, because `flwr run --run-config` may only override keys
that exist there.
"""
from __future__ import annotations

import os
from edgetune.runtime.atomic import atomic_write
from edgetune.runtime.errors import UsageError

from .processes import toml_lines
from .task import RunSettings

APP_NAME = "edgetune-fleet"
PUBLISHER = "edgetune"


def app_toml(settings: RunSettings) -> str:
    """The text of the app's pyproject.toml."""
    return f"""# Flower app of edgetune: run it with  flwr run <this folder> <superlink connection>
# Written by 'edgetune fleet init'; see docs/FLEET.md. Edit the run settings below, or override
# them per run with  flwr run . <connection> --run-config 'rounds=5 lr=0.01'.
[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "Federated fine-tuning of an ONNX model with edgetune on Flower"
# Every SuperLink and SuperNode machine has these installed already; Flower must not install them.
dependencies = ["edgetune[fleet]"]

[tool.flwr.app]
publisher = "{PUBLISHER}"

[tool.flwr.app.components]
serverapp = "edgetune.fleet.server_app:app"
clientapp = "edgetune.fleet.client_app:app"

[tool.flwr.app.config]
{toml_lines(settings.to_run_config())}"""


def write_app(folder: str, settings: RunSettings, overwrite: bool = False) -> str:
    """Write FOLDER/pyproject.toml (atomically) and return its path."""
    settings.checked()
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{folder}: exists and is not a folder")
    path = os.path.join(folder, "pyproject.toml")
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"{path} exists already; pass --force to replace it")
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(app_toml(settings))
    return path

