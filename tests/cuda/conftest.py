"""Fixtures for the CUDA kernel tests: the CPU emulation library, built once per test run."""
from __future__ import annotations

import pytest

import cuda_emulator


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> cuda_emulator.Emulator:
    """kernels/*.cu compiled by g++ into a temporary directory, loaded via ctypes."""
    if cuda_emulator.CXX is None:
        pytest.skip("g++ not found on PATH: cannot build the CPU emulation of the CUDA kernels")
    lib = cuda_emulator.build(tmp_path_factory.mktemp("cuda_emulation"))
    return cuda_emulator.Emulator(lib)
