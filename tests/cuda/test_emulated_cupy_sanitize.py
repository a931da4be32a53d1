"""``emulated_cupy(sanitize=True)``: kernels run through the emulated CuPy are built with
ASan and UBSan. A child Python started by ``python -m dualconv.testing.sanitized`` (the
ASan runtime preloaded) runs a kernel that reads x[i] of a 4-element array: i = 3 runs
clean, i = 4 (one past the end, a value the kernel stores but nothing checks) aborts with
ASan's report. .ci/run runs tests/gpu the same way, so every layer's kernels are checked.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dualconv.testing import emulated_cupy
from dualconv.testing.fake_cupy import _native

REPO = Path(__file__).resolve().parents[2]

READ_ONE = r'''
import sys
import numpy as np
from dualconv.testing import emulated_cupy

SOURCE = 'extern "C" __global__ void read_at(const float* x, float* y, int i) { y[0] = x[i]; }'
with emulated_cupy():  # sanitize from DUALCONV_EMULATE_SANITIZE, set by the runner
    import cupy
    x, y = cupy.arange(4, dtype=cupy.float32), cupy.zeros(1, dtype=cupy.float32)
    cupy.RawKernel(SOURCE, "read_at")((1,), (1,), (x, y, np.int32(int(sys.argv[1]))))
    print("read", float(y[0]))
'''


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory):
    if _native.sanitizer_env() is None:
        pytest.skip("g++ has no AddressSanitizer / UBSan runtime")
    script = tmp_path_factory.mktemp("sanitize") / "read_one.py"
    script.write_text(READ_ONE)

    def run(index: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dualconv.testing.sanitized", sys.executable,
                               str(script), str(index)], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    return run


def test_an_in_bounds_kernel_runs_clean_under_the_sanitizers(sanitized):
    proc = sanitized(3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "read 3.0"


def test_a_read_one_past_the_end_aborts_with_asans_report(sanitized):
    proc = sanitized(4)
    assert proc.returncode != 0, proc.stdout
    assert "heap-buffer-overflow" in proc.stderr and "read_at" in proc.stderr, proc.stderr[-3000:]


def test_sanitize_without_the_asan_runtime_loaded_refuses():
    if _native.asan_loaded():
        pytest.skip("this process has the ASan runtime")
    with pytest.raises(RuntimeError, match="needs the AddressSanitizer runtime loaded first"):
        with emulated_cupy(sanitize=True):
            pass
    assert not _native._sanitize[0]


def test_the_runner_answers_help_and_an_unknown_command_in_one_line(capsys, monkeypatch):
    from dualconv.testing import sanitized
    from dualconv.testing.fake_cupy import _native
    assert sanitized.main(["--help"]) == 0
    assert capsys.readouterr().out == sanitized.USAGE + "\n"
    monkeypatch.setattr(_native, "sanitizer_env", lambda: dict(os.environ))  # as where ASan exists
    assert sanitized.main(["no-such-command-here"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "cannot run 'no-such-command-here'" in err, err
