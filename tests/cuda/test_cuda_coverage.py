"""Adding a kernel to kernels/*.cu without wiring it up everywhere fails here:
it must be listed in kernels_cuda.KERNELS (so CuPy instantiates it for every
dtype), have a plan, and have emulated parity tests."""
from __future__ import annotations

import re

import pytest

from dualconv import kernels_cuda, kernels_numpy
from test_cuda_emulated import KERNELS_UNDER_TEST

GLOBAL = re.compile(r"__global__\s+void\s+(\w+)\s*\(")


def kernels_in_sources() -> set[str]:
    found: set[str] = set()
    for name, source in kernels_cuda.kernel_sources().items():
        found |= set(GLOBAL.findall(source.read_text()))
    return found


def test_every_global_is_instantiated_planned_and_tested():
    in_sources = kernels_in_sources()
    assert in_sources, "no __global__ functions found in kernels/*.cu"
    assert in_sources == set(kernels_cuda.KERNELS), "kernels_cuda.KERNELS is out of date"
    assert in_sources == set(kernels_cuda.PLANS), "a kernel has no plan_* in kernels_cuda"
    assert in_sources == set(KERNELS_UNDER_TEST), "a kernel has no emulated parity test"
    for kernel in in_sources:
        assert hasattr(kernels_numpy, kernel), f"{kernel} has no NumPy reference"
        assert callable(getattr(kernels_cuda, kernel, None)), f"kernels_cuda.{kernel} missing"


@pytest.mark.cuda_emulated
def test_emulation_library_holds_every_instantiation(emulator):
    assert emulator.names() == set(kernels_cuda.NAME_EXPRESSIONS)
