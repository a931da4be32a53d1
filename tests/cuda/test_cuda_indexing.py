"""Index width and memory order of the CUDA launches.

Every kernel has a 32-bit and a 64-bit instantiation; the plan picks the
32-bit one whenever every index fits (as PyTorch's canUse32BitIndexMath
does), and the 32-bit kernels divide by multiplying with a magic number.
Image inputs are read where they lie, through their strides.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dualconv.kernels import cpu, cuda_plans, launch
from dualconv.shapes import Window
from kernel_cases import (ARGS, DTYPES, HAND_PICKED, Case, Shaped, assert_bitwise_equal,
                          kernel_args)

pytestmark = pytest.mark.cuda_emulated


def _scalars(plan: launch.Launch) -> list[np.generic]:
    return [a for a in plan.args if isinstance(a, np.generic)]


def test_more_than_2_31_elements_run_the_64_bit_kernel_without_allocating():
    plan = cuda_plans.plan_im2col(Shaped((64, 64, 512, 512)), Window(3, 3, 1, 1, 1, 1))
    assert np.prod(plan.outputs[0].shape) > 2**31
    assert plan.name == "im2col<float, long long>"
    geometry = [a for a in _scalars(plan) if a.dtype.kind == "i"]
    assert len(geometry) == 19 and all(a.dtype == np.int64 for a in geometry)
    assert plan.grid == (launch.MAX_GRID, 1, 1)


def test_a_lenet_sized_plan_runs_the_32_bit_kernel():
    plan = cuda_plans.plan_im2col(Shaped((256, 1, 28, 28)), Window(5, 5, 1, 1, 2, 2))
    assert plan.name == "im2col<float, int>"
    assert all(a.dtype == np.int32 for a in _scalars(plan) if a.dtype.kind == "i")


def test_the_index_width_switches_where_the_last_index_stops_fitting():
    work = 1000
    threads = launch.blocks(work) * launch.BLOCK
    assert launch.index_dtype([2**31 - 1 - threads], work) == np.int32
    assert launch.index_dtype([2**31 - threads], work) == np.int64
    big = 2**31 - 1 - launch.MAX_GRID * launch.BLOCK  # the grid-stride index must fit too
    assert launch.index_dtype([1], big) == np.int32
    assert launch.index_dtype([1], big + 1) == np.int64


DIVISORS = [*range(1, 300), 641, 1000, 6700417, 2**16 - 1, 2**16 + 1, 2**30 - 1, 2**30,
            2**30 + 1, 2**31 - 1]


@pytest.mark.parametrize("d", DIVISORS)
def test_magic_division_is_exact_on_32_bit_arithmetic(d):
    """DcDiv<int> (common.cuh), in Python: t = umulhi(n, m); q = (t + n) >> s, each on 32 bits."""
    packed = int(launch.magic(d))
    m, s = packed & 0xFFFFFFFF, packed >> 32
    rng = np.random.default_rng(d)
    ns = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2**31 - 1, 2**31 - 2,
          *rng.integers(0, 2**31, 200).tolist()}
    for n in (n for n in ns if 0 <= n < 2**31):
        t = (n * m) >> 32
        assert ((t + n) & 0xFFFFFFFF) >> s == n // d, (n, d)


def _wide(plan: launch.Launch) -> launch.Launch:
    """The same launch on the 64-bit instantiation (its scalars widened)."""
    args = tuple(np.int64(a) if isinstance(a, np.int32) else a for a in plan.args)
    return dataclasses.replace(plan, name=plan.name.replace(", int", ", long long"), args=args)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", tuple(ARGS))
def test_64_bit_instantiations_match_the_cpu_twins(emulator, kernel, dtype):
    for i, case in enumerate(HAND_PICKED):
        args = kernel_args(kernel, case, dtype, "nonfinite", seed=i)
        plan = _wide(cuda_plans.PLANS[kernel](*args))
        assert "long long" in plan.name
        with np.errstate(invalid="ignore"):
            expected = getattr(cpu, kernel)(*args)
        assert_bitwise_equal(emulator.run(plan), expected, f"{kernel} {case}")


def _layouts(x: np.ndarray) -> dict[str, tuple[np.ndarray, bool]]:
    """x in several memory orders: {name: (array, read without a copy)}."""
    batch_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    return {"batch-first": (x, True), "batch-last": (batch_last, True),
            "fortran": (np.asfortranarray(x), True), "sliced": (x[:, :, ::2, 1:], False)}


@pytest.mark.parametrize("kernel", ["im2col", "max_pool_forward", "avg_pool_forward"])
def test_image_inputs_are_read_where_they_lie(emulator, kernel):
    x = np.random.default_rng(3).standard_normal((3, 4, 10, 9))
    win = Window(3, 2, 2, 1, 1, 0)
    for name, (xv, in_place) in _layouts(x).items():
        plan = cuda_plans.PLANS[kernel](xv, win)
        image = plan.args[0]
        assert isinstance(image, launch.Input)
        assert xv.transpose(image.axes).flags.c_contiguous == in_place, name
        assert_bitwise_equal(emulator.run(plan), getattr(cpu, kernel)(xv, win), f"{kernel} {name}")


@pytest.mark.parametrize("kernel", ["max_pool_backward", "avg_pool_backward"])
def test_pooling_gradients_are_read_where_they_lie(emulator, kernel):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8, 8))
    win = Window(2, 2, 2, 2, 0, 0)
    _, argmax = cpu.max_pool_forward(x, win)
    for name, (gy, _) in _layouts(rng.standard_normal((3, 2, 4, 4))).items():
        if gy.shape != argmax.shape:
            continue
        args = (gy, argmax, 8, 8, win) if kernel == "max_pool_backward" else (gy, 8, 8, win)
        assert_bitwise_equal(emulator.call(kernel, *args), getattr(cpu, kernel)(*args),
                             f"{kernel} {name}")


@pytest.mark.parametrize("kernel", tuple(ARGS))
def test_an_empty_batch_runs_no_thread(emulator, kernel):
    args = kernel_args(kernel, Case(0, 2, 6, 6, 2, 2, 2, 2, 0, 0), np.float32, "spread")
    assert_bitwise_equal(emulator.call(kernel, *args), getattr(cpu, kernel)(*args), kernel)
