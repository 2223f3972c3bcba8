"""Synthesis runs in CI: yosys synth_ice40 and a generic LUT4 flow on device_link and a 2x2
pe_core (hardware/synth.py). Checks that the datapath survives synthesis (one 24x24 significand
multiplier per PE lane, every memory kept as block RAM) and that docs/HARDWARE.md shows this
run's numbers when the installed yosys is the version the page names. The run itself is
`python -m edgetune.hardware.synth`, which conftest.py starts as soon as this test is collected."""
from __future__ import annotations

import re
import warnings
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "HARDWARE.md"


def test_synthesis_report_and_doc_numbers(synth_report):
    """The yosys run (started at collection by conftest.py, beside the simulations)."""
    from edgetune.hardware import synth

    rep = synth_report
    table = synth.markdown(rep)
    print("\n" + table)
    link, pe = rep["device_link"], rep["pe_core 2x2"]
    for r in (link, pe):
        assert min(r["ice40"]["LUT4"], r["ice40"]["flip_flops"], r["generic"]["LUT4"]) > 0
    # the link's six byte memories (rx, tx, staging, result buffers, ...) stay memories; no multiplier array
    assert link["generic"]["memories"] == 6 and link["ice40"]["SB_RAM40_4K"] > 0
    assert link["generic"]["multipliers_48bit"] == 0
    # the PE core keeps its five memories and one fp32 significand multiplier per lane
    assert pe["generic"]["memories"] == 5 and pe["ice40"]["SB_RAM40_4K"] > 0
    assert pe["generic"]["multipliers_48bit"] == 4
    assert pe["ice40"]["SB_MAC16"] >= 4          # a 24x24 product takes several 16x16 DSPs
    doc = DOC.read_text()
    m = re.search(r"numbers below: (Yosys \S+)", doc)
    assert m, "docs/HARDWARE.md must name the yosys version of its resource table"
    version = synth.yosys_version()
    if version != m.group(1):
        warnings.warn(f"{version} installed, docs/HARDWARE.md shows {m.group(1)}'s numbers: not compared")
        return
    assert table in doc, "docs/HARDWARE.md's resource table is not this run's (python -m edgetune.hardware.synth --markdown)"
