"""Fixtures of the emulated CuPy's own tests: ``emu`` (the Emulation handle, counters
reset) and ``cp`` (the stand-in module that ``import cupy`` gives inside it)."""
from __future__ import annotations

import pytest

from dualconv.testing import emulated_cupy


@pytest.fixture
def emu():
    with emulated_cupy() as handle:
        handle.reset_counters()
        yield handle


@pytest.fixture
def cp(emu):
    import cupy
    return cupy
