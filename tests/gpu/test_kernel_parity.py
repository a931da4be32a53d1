"""The CUDA kernels through CuPy (a real GPU, or the emulated CuPy) against the NumPy reference: bitwise
equal, over the same cases as the CPU-emulated tests in tests/cuda/ (ties,
NaN/inf, overlapping windows, stride, padding, dilation, rectangles)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dualconv.kernels import cpu
from dualconv.shapes import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cuda"))
from kernel_cases import (ARGS, DTYPES, HAND_PICKED, VALUE_KINDS, assert_bitwise_equal,  # noqa: E402
                          kernel_args, random_cases)

pytestmark = pytest.mark.gpu  # a real GPU when usable, else the emulated CuPy (conftest.py)

CASES = HAND_PICKED + random_cases(seed=20240602, count=60)


def _to_device(args: tuple, cupy) -> tuple:
    return tuple(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args)


def _to_host(result, cupy):
    if isinstance(result, tuple):
        return tuple(cupy.asnumpy(r) for r in result)
    return cupy.asnumpy(result)


@pytest.mark.parametrize("kind", VALUE_KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", tuple(ARGS))
def test_cupy_kernel_matches_numpy(kernel, dtype, kind):
    import cupy

    from dualconv.kernels import cuda
    for i, case in enumerate(CASES):
        args = kernel_args(kernel, case, dtype, kind, seed=i)
        with np.errstate(invalid="ignore"):
            expected = getattr(cpu, kernel)(*args)
        actual = _to_host(getattr(cuda, kernel)(*_to_device(args, cupy)), cupy)
        assert_bitwise_equal(actual, expected, f"{kernel} {case} {kind}")


def test_cupy_kernels_on_a_larger_input():
    """Enough work for many blocks, with overlapping windows and ties."""
    import cupy

    from dualconv.kernels import cuda
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, size=(8, 16, 33, 31)).astype(np.float32)
    window = Window(3, 3, 2, 2, 1, 1, 1, 1)
    y, argmax = cpu.max_pool_forward(x, window)
    gy, ga = cuda.max_pool_forward(cupy.asarray(x), window)
    assert_bitwise_equal((cupy.asnumpy(gy), cupy.asnumpy(ga)), (y, argmax))
    g = rng.standard_normal(y.shape).astype(np.float32)
    assert_bitwise_equal(
        cupy.asnumpy(cuda.max_pool_backward(cupy.asarray(g), ga, 33, 31, window)),
        cpu.max_pool_backward(g, argmax, 33, 31, window))
    col = cpu.im2col(x, window)
    assert_bitwise_equal(cupy.asnumpy(cuda.im2col(cupy.asarray(x), window)), col)
    assert_bitwise_equal(
        cupy.asnumpy(cuda.col2im(cupy.asarray(col), 33, 31, window)),
        cpu.col2im(col, 33, 31, window))
