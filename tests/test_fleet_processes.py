"""Teardown of a fleet's processes by PID (no Flower): what Fleet.close() must find and end."""
import os
import sys
import time

import pytest

from edgetune.fleet.processes import Fleet, toml_lines, toml_value

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="the process table is read from /proc")

# R (started by the fleet) starts L in a new session; L starts D in L's session with an empty
# environment (no marker), writes D's PID, waits for GO, exits: D is an orphan that neither
# carries the marker nor descends from anything the fleet knows, like Ray's daemons.
TREE = r"""
import os, subprocess, sys, time
if sys.argv[1] == "R":
    subprocess.Popen([sys.executable, __file__, "L", sys.argv[2]], start_new_session=True)
    time.sleep(300)
elif sys.argv[1] == "L":
    d = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], env={})
    open(sys.argv[2] + "/d.pid", "w").write(str(d.pid))
    while not os.path.exists(sys.argv[2] + "/GO"):
        time.sleep(0.05)
"""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def parent(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


@pytest.mark.timeout(60)
def test_close_ends_an_orphan_in_a_session_the_fleet_opened(tmp_path):
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    fleet = Fleet(str(tmp_path / "home"))
    try:
        root = fleet.start("root", [sys.executable, str(script), "R", str(tmp_path)])
        deadline = time.monotonic() + 30
        while not (tmp_path / "d.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        d = int((tmp_path / "d.pid").read_text())
        assert d in fleet.reaper.members() and root.pid in fleet.reaper.members()
        leader = parent(d)
        (tmp_path / "GO").write_text("")          # L exits: D is orphaned
        while alive(leader) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(d) and parent(d) != leader
    finally:
        fleet.close()
    assert fleet.leftovers == []
    assert not alive(root.pid) and not alive(d)
    assert os.getpid() not in fleet.reaper.members() and alive(os.getpid())


def test_toml_values_for_run_config_files():
    assert toml_value(True) == "true" and toml_value(3) == "3" and toml_value(0.5) == "0.5"
    assert toml_value('a "b"\\c') == '"a \\"b\\"\\\\c"'
    assert toml_lines({"out": "/x y/z.onnx", "rounds": 2}) == 'out = "/x y/z.onnx"\nrounds = 2\n'
