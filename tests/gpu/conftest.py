"""tests/gpu run on a real GPU when one is usable, and otherwise on the emulated CuPy.

The ``gpu`` fixture (autouse) yields None on a real GPU, or the
``dualconv.testing.Emulation`` handle (with its counters) under the stand-in.
On a machine with a CUDA device that the CuPy backend cannot use (CuPy missing, or
the probe kernel does not compile: no CUDA headers, say), every test fails and says
why: green tests from the stand-in would hide the broken GPU. ``DUALCONV_EMULATE_GPU=1``
asks for the stand-in on such a machine. ``python -m dualconv.testing.sanitized python
-m pytest tests/gpu`` runs the stand-in's kernels under ASan and UBSan (as .ci/run does).
Without a usable GPU and without g++ the tests are skipped.
"""
from __future__ import annotations

import shutil

import pytest

from dualconv.backend import cuda_device_present, cupy_problem, emulated


def gpu_state() -> tuple[bool, str | None]:
    """(whether the tests run on a real GPU, why they must fail instead, or None)."""
    if emulated():  # the stand-in, asked for by DUALCONV_EMULATE_GPU=1
        return False, None
    problem = cupy_problem()
    if problem is None:
        return True, None
    if cuda_device_present():
        return False, (f"tests/gpu: this machine has a CUDA device but the CuPy backend cannot use "
                       f"it: {problem}. Install the GPU test environment (pip install -e "
                       f"'.[test,gpu]', which brings cupy-cuda12x[ctk]: CUDA headers and NVRTC), "
                       f"or set DUALCONV_EMULATE_GPU=1 to test on the CPU stand-in on purpose")
    return False, None


REAL_GPU, BROKEN_GPU = gpu_state()


@pytest.fixture(autouse=True)
def gpu(monkeypatch):
    """The emulated CuPy's handle, or None on a real GPU. Under the emulation cuBLAS is
    NumPy's matmul, so the NumPy side these tests hold it to bit for bit is the GEMM twin:
    the compiled CPU convolution (kernels/cpu_conv.c), which sums in another order, is off."""
    if BROKEN_GPU is not None:
        pytest.fail(BROKEN_GPU, pytrace=False)
    if REAL_GPU:
        yield None
        return
    if shutil.which("g++") is None:
        pytest.skip("no usable GPU, and no g++ for the emulated CuPy")
    from dualconv.testing import emulated_cupy
    monkeypatch.setenv("DUALCONV_NATIVE", "0")
    with emulated_cupy() as emu:
        emu.reset_counters()
        yield emu


@pytest.fixture
def emu(gpu):
    """The emulation handle, for tests that read the counters (skipped on a real GPU)."""
    if gpu is None:
        pytest.skip("the counters exist only under the emulated CuPy")
    return gpu
