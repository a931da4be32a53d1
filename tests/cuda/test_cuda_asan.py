"""Every kernel under AddressSanitizer (+ UBSan): out-of-bounds reads or writes
and undefined behaviour in kernels/*.cu abort the run.

The ASan build is loaded into a child Python with libasan LD_PRELOADed (ASan
must come first in the process); leak detection is off because CPython itself
does not free everything at exit.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cuda_emulator
from dualconv.testing.fake_cupy import _native

pytestmark = pytest.mark.cuda_emulated

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture(scope="module")
def asan_run(tmp_path_factory):
    if cuda_emulator.CXX is None:
        pytest.skip("g++ not found on PATH")
    env = _native.sanitizer_env()
    if env is None:
        pytest.skip("g++ has no AddressSanitizer / UBSan runtime (libasan.so, libubsan.so)")
    lib = cuda_emulator.build(tmp_path_factory.mktemp("cuda_asan"), sanitize=True)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), str(HERE.parent),
                                         os.environ.get("PYTHONPATH", "")])

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(HERE / "asan_driver.py"), str(lib), *extra],
                              env=env, capture_output=True, text=True, timeout=300)
    return run


def test_every_kernel_runs_clean_under_asan(asan_run):
    proc = asan_run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok:" in proc.stdout
    assert "ERROR: AddressSanitizer" not in proc.stderr


def test_asan_catches_an_out_of_bounds_read(asan_run):
    """The negative control: proves the run above would have seen a bad read."""
    proc = asan_run("--overflow")
    assert proc.returncode != 0, proc.stdout
    assert "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]
