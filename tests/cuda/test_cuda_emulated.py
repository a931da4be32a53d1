"""The CUDA kernels, run on the CPU through the g++ emulation harness, against
the NumPy reference kernels: bitwise equal, launched with exactly the grid,
block and arguments the CuPy backend uses (dualconv.kernels.cuda_plans)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dualconv import kernels
from dualconv.kernels import cpu, cuda, cuda_plans
from dualconv.shapes import Window
from kernel_cases import (ARGS, DTYPES, HAND_PICKED, VALUE_KINDS, Case,
                          assert_bitwise_equal, kernel_args, random_cases)

pytestmark = pytest.mark.cuda_emulated

KERNELS_UNDER_TEST = tuple(ARGS)
CASES = HAND_PICKED + random_cases(seed=20240601, count=40)


@pytest.mark.parametrize("kind", VALUE_KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", KERNELS_UNDER_TEST)
def test_kernel_matches_numpy(emulator, kernel, dtype, kind):
    for i, case in enumerate(CASES):
        args = kernel_args(kernel, case, dtype, kind, seed=i)
        with np.errstate(invalid="ignore"):  # inf - inf in the "nonfinite" sums
            expected = getattr(cpu, kernel)(*args)
        actual = emulator.call(kernel, *args)
        assert_bitwise_equal(actual, expected, f"{kernel} {case} {kind}")


@pytest.mark.parametrize("kernel", KERNELS_UNDER_TEST)
def test_grid_stride_loop_covers_a_small_grid(emulator, kernel):
    """With fewer threads than elements, every thread loops: same result."""
    case = Case(2, 3, 9, 8, 3, 2, 1, 2, 1, 1)
    args = kernel_args(kernel, case, np.float64, "spread")
    launch = cuda_plans.PLANS[kernel](*args)
    small = dataclasses.replace(launch, grid=(3, 1, 1), block=(32, 1, 1))
    assert_bitwise_equal(emulator.run(small), getattr(cpu, kernel)(*args), kernel)


def test_max_pool_ties_go_to_the_first_maximum(emulator):
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = 5.0
    y, argmax = emulator.call("max_pool_forward", x, Window(3, 3, 1, 1, 1, 1))
    assert argmax[0, 0, 1, 1] == 4 and argmax[0, 0, 2, 2] == 0
    assert argmax[0, 0, 0, 0] == 8  # x[1, 1]; the zeros and the padding (-inf) lose
    assert_bitwise_equal((y, argmax), cpu.max_pool_forward(x, Window(3, 3, 1, 1, 1, 1)))


def test_max_pool_nan_propagates(emulator):
    x = np.array([[[[1.0, np.nan, 7.0, np.nan]]]])
    y, argmax = emulator.call("max_pool_forward", x, Window(1, 4, 1, 1, 0, 0))
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1


def test_strided_input_is_made_contiguous(emulator):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 10))[:, ::2, :, ::2]
    assert not x.flags.c_contiguous
    assert_bitwise_equal(emulator.call("im2col", x, Window(3, 2, 1, 1, 1, 0)),
                         cpu.im2col(x, Window(3, 2, 1, 1, 1, 0)))


def test_the_dispatch_refuses_what_a_plan_would_read_out_of_bounds():
    """A plan trusts its arguments: call it through dualconv.kernels, whose check
    (the same for both twins) refuses these before any plan is made."""
    f32 = np.float32
    with pytest.raises(TypeError, match="max_pool_backward: argmax must be int32"):
        kernels.max_pool_backward(np.zeros((1, 1, 2, 2), f32), np.zeros((1, 1, 2, 2), np.int64),
                                  4, 4, Window(2, 2, 2, 2, 0, 0))
    with pytest.raises(ValueError, match="avg_pool_backward: gy must have shape"):
        kernels.avg_pool_backward(np.zeros((1, 1, 3, 2), f32), 4, 4, Window(2, 2, 2, 2, 0, 0))
    with pytest.raises(ValueError, match="col2im: col has out_h"):
        kernels.col2im(np.zeros((1, 2, 2, 1, 3, 3), f32), 4, 4, Window(2, 2, 2, 2, 0, 0))
    with pytest.raises(ValueError, match="im2col: .* does not fit"):
        kernels.im2col(np.zeros((1, 1, 2, 2), f32), Window(3, 3, 1, 1, 0, 0))
    with pytest.raises(TypeError, match="im2col: x must be float32 or float64"):
        kernels.im2col(np.zeros((1, 1, 2, 2), np.float16), Window(1, 1, 1, 1, 0, 0))


def test_plans_take_the_numpy_signatures():
    import inspect
    for name, plan in cuda_plans.PLANS.items():
        reference = inspect.signature(getattr(kernels.twin_for(np, name), name))
        assert list(inspect.signature(plan).parameters) == list(reference.parameters), name
        assert (list(inspect.signature(getattr(cuda, name)).parameters)
                == list(reference.parameters)), name
