"""Adding a kernel to kernels/*.cu without wiring it up everywhere fails here:
it must be listed in cuda.KERNELS (so CuPy instantiates it for every
dtype), have a plan (or, for the list updates, cuda_many's launch), and have
emulated parity tests."""
from __future__ import annotations

import re

import numpy as np
import pytest

from dualconv import kernels
from dualconv.kernels import cuda, cuda_many, cuda_plans, cuda_step_plans, sources
from test_cuda_emulated import KERNELS_UNDER_TEST
from test_cuda_fused import FUSED_UNDER_TEST
from test_cuda_guarded import GUARDED_UNDER_TEST
from test_cuda_many import MANY_UNDER_TEST
from test_cuda_step import STEP_UNDER_TEST

cupy_like = object()  # any module but numpy selects the CUDA side in twin_for
GLOBAL = re.compile(r"__global__\s+void\s+(\w+)\s*\(")


def kernels_in_sources() -> set[str]:
    found: set[str] = set()
    for name, source in sources.kernel_sources().items():
        found |= set(GLOBAL.findall(source.read_text()))
    return found


def test_every_global_is_instantiated_planned_and_tested():
    in_sources = kernels_in_sources()
    assert in_sources, "no __global__ functions found in kernels/*.cu"
    assert in_sources == set(cuda.KERNELS), "cuda.KERNELS is out of date"
    assert in_sources == set(cuda_plans.PLANS) | set(cuda_step_plans.PLANS) | set(cuda_many.KERNELS), \
        "a kernel has no plan_* in cuda_plans.py or cuda_step_plans.py, nor a launch in cuda_many.py"
    assert not set(cuda_plans.PLANS) & set(cuda_step_plans.PLANS)
    assert in_sources == set(KERNELS_UNDER_TEST + FUSED_UNDER_TEST + GUARDED_UNDER_TEST
                             + STEP_UNDER_TEST + MANY_UNDER_TEST), \
        "a kernel has no emulated parity test"
    for kernel in in_sources:
        assert hasattr(kernels.twin_for(np, kernel), kernel), f"{kernel} has no CPU twin"
        assert callable(getattr(kernels.twin_for(cupy_like, kernel), kernel, None)), \
            f"{kernel} has no CUDA twin"


@pytest.mark.cuda_emulated
def test_emulation_library_holds_every_instantiation(emulator):
    assert emulator.names() == set(cuda.NAME_EXPRESSIONS)
