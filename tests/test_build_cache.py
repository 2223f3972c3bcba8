"""Issue 22, section 3, item 6: `pip install ".[plots]"` after `pip install .` must not recompile
the extension. pip builds each time in a new isolated environment, and that used to cost a full
rebuild twice over: scikit-build-core then deletes CMakeCache.txt and the top-level CMakeFiles/
(where the objects were), and pybind11's include path, part of every compile command, is a new
temporary folder. This configures the project as two such builds do, without compiling."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from requires import need, need_tool

REPO = Path(__file__).resolve().parents[1]


def _cmake():
    return need_tool("cmake", "pip install cmake (or apt-get install cmake)")


def _configure_as_a_new_build_env(cmake, build: Path, env: Path) -> dict:
    """What scikit-build-core does for a build in the isolated environment `env` (a folder holding
    pybind11): clear the stale cache, configure; returns {source file: compile command}."""
    (build / "CMakeCache.txt").unlink(missing_ok=True)
    shutil.rmtree(build / "CMakeFiles", ignore_errors=True)
    subprocess.run([cmake, "-S", str(REPO), "-B", str(build), "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
                    f"-Dpybind11_DIR={env / 'pybind11' / 'share' / 'cmake' / 'pybind11'}",
                    f"-DPython_EXECUTABLE={sys.executable}"], check=True, capture_output=True, text=True)
    entries = json.loads((build / "compile_commands.json").read_text())
    return {e["file"]: (e["directory"], e.get("command") or shlex.join(e["arguments"])) for e in entries}


@pytest.mark.timeout(900)
def test_a_build_in_a_new_isolated_env_reuses_the_objects(tmp_path):
    cmake = _cmake()
    pybind11 = Path(need("pybind11", "the build requirement, in the test extra").__file__).parent
    envs = []
    for name in ("pip-build-env-a", "pip-build-env-b"):
        env = tmp_path / name
        shutil.copytree(pybind11, env / "pybind11")      # new files, new time stamps: a fresh install
        envs.append(env)
    build = tmp_path / "build"
    first = _configure_as_a_new_build_env(cmake, build, envs[0])
    second = _configure_as_a_new_build_env(cmake, build, envs[1])
    assert first == second, "a compile command changed, so ninja would recompile"
    for folder, command in first.values():
        assert "pip-build-env" not in command
        words = shlex.split(command)
        obj = os.path.relpath(os.path.join(folder, words[words.index("-o") + 1]), build)
        # scikit-build-core deletes <build>/CMakeFiles, not <build>/native/CMakeFiles
        assert not obj.startswith("CMakeFiles"), obj
    # the header copies the commands name kept their time stamps, so the depfiles see no change
    copies = build / "pybind11-include" / "pybind11"
    assert (copies / "pybind11.h").read_bytes() == (pybind11 / "include" / "pybind11" / "pybind11.h").read_bytes()
    stamp = os.stat(copies / "pybind11.h").st_mtime_ns
    _configure_as_a_new_build_env(cmake, build, envs[0])
    assert os.stat(copies / "pybind11.h").st_mtime_ns == stamp
