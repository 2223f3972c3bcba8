"""Dependencies point one way: the firmware bridge's protocol layer does not import the runtime.

The host side of the link (framing, protocol, codecs, transports, client, session, loopback,
the emulator launcher) may use only edgetune.runtime.errors, the dependency-free error
hierarchy, so a host program can talk to a device without ONNX or the trainer. The device side
(the emulator and its accounting) hosts the runtime's engines and may import them
(docs/ARCHITECTURE.md, "Layers").
"""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PROTOCOL_LAYER = ("errors", "framing", "protocol", "codecs", "transport", "client", "session", "loopback",
                  "faults", "golden", "emulator_process")
ALLOWED = {"edgetune.runtime.errors", "edgetune.runtime"}


def _imports(path):
    """Absolute names of every module a file imports, function-level imports included."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "edgetune.firmware_bridge" if node.level == 1 else "edgetune" if node.level == 2 else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            yield mod
            if node.module is None or mod == "edgetune.runtime":
                yield from (f"{mod}.{a.name}" for a in node.names)


@pytest.mark.parametrize("name", PROTOCOL_LAYER)
def test_protocol_layer_imports_nothing_of_the_runtime_but_its_errors(name):
    path = os.path.join(ROOT, "firmware_bridge", f"{name}.py")
    bad = sorted(m for m in _imports(path) if m.startswith("edgetune.runtime") and m not in ALLOWED)
    assert not bad, f"firmware_bridge/{name}.py imports {bad}"


def test_importing_the_protocol_layer_loads_no_onnx_and_no_trainer():
    mods = ", ".join(f"edgetune.firmware_bridge.{m}" for m in PROTOCOL_LAYER)
    code = (f"import sys, {mods}\n"
            "print(sorted(m for m in sys.modules if m.startswith('edgetune.runtime') or m in ('onnx', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "['edgetune.runtime', 'edgetune.runtime.errors']"
