"""The step-memory probe measures its child process, not the process that started it."""
import numpy as np

from edgetune.runtime.bench_memory import step_memory


def test_child_reports_its_own_high_water_mark_not_its_parents():
    # ru_maxrss survives exec: a child of a large parent read the parent's mark and every step
    # grew by 0 bytes in `edgetune bench` (where torch makes the parent ~400 MiB)
    ballast = np.ones(512 * 2**20 // 8)  # 512 MiB touched in this process
    r = step_memory("digits_cnn", "sparse", 8, 1, steps=2)
    assert r["peak_bytes"] < ballast.nbytes, r
    assert r["step_bytes"] > 0, r
    del ballast
