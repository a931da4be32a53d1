"""tests/gpu run on a real GPU when one is usable, and otherwise on the emulated CuPy.

The ``gpu`` fixture (autouse) yields None on a real GPU, or the
``dualconv.testing.Emulation`` handle (with its counters) under the stand-in.
Without a usable GPU and without g++ the tests are skipped.
"""
from __future__ import annotations

import shutil

import pytest

from dualconv.backend import emulated, gpu_available


def _real_gpu() -> bool:
    return gpu_available() and not emulated()


REAL_GPU = _real_gpu()


@pytest.fixture(autouse=True)
def gpu():
    if REAL_GPU:
        yield None
        return
    if shutil.which("g++") is None:
        pytest.skip("no usable GPU, and no g++ for the emulated CuPy")
    from dualconv.testing import emulated_cupy
    with emulated_cupy() as emu:
        emu.reset_counters()
        yield emu


@pytest.fixture
def emu(gpu):
    """The emulation handle, for tests that read the counters (skipped on a real GPU)."""
    if gpu is None:
        pytest.skip("the counters exist only under the emulated CuPy")
    return gpu
