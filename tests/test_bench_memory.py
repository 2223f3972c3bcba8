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


def test_step_memory_is_measured_from_after_loading():
    # an external model's loading (ONNX parse, weight copies) peaks above its training steps; the
    # mark is reset after loading, so a step's growth is still seen (it read 0.0 MiB before)
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from edgetune.runtime.bench_memory import reset_peak, _status_kib\n"
        "big = np.ones(256 * 2**20 // 8); del big\n"          # a loading peak of 256 MiB, then freed
        "base = reset_peak()\n"
        "step = np.ones(64 * 2**20 // 8)\n"                    # a 'step' touching 64 MiB
        "print(base is not None, _status_kib('VmHWM') * 1024 - (base or 0))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ok, grew = out.stdout.split()
    if ok != "True":
        import pytest

        pytest.skip("this kernel cannot reset the resident high-water mark (/proc/self/clear_refs)")
    assert 60 * 2**20 < int(grew) < 100 * 2**20, grew
