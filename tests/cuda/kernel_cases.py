"""Test cases for the CUDA kernels, shared by the CPU-emulated tests
(tests/cuda/) and the real-GPU parity tests (tests/gpu/).

A case is a window geometry, a ``WindowConfig`` of tests/window_configs.py
(tests/ is on sys.path: pytest puts the folder of tests/conftest.py there);
``kernel_args`` turns (kernel, case, dtype, value kind) into the positional
arguments of the kernel function (the same for cpu.py, cuda.py and the plans).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from dualconv.kernels import cpu
from window_configs import WindowConfig, random_configs

DTYPES = (np.float32, np.float64)
VALUE_KINDS = ("spread", "ties", "nonfinite")

# Under the names that tests/cuda and tests/gpu import.
Case = WindowConfig
random_cases = random_configs


HAND_PICKED = [
    Case(2, 3, 8, 8, 3, 3, 1, 1, 1, 1),          # overlapping windows, "same" padding
    Case(2, 2, 7, 9, 3, 3, 2, 2, 1, 1),          # overlapping, stride 2
    Case(1, 2, 6, 6, 2, 2, 2, 2, 0, 0),          # classic 2x2 pool, no overlap
    Case(1, 1, 9, 7, 2, 5, 1, 2, 0, 2),          # rectangular kernel and input
    Case(2, 1, 10, 11, 3, 2, 2, 3, 2, 1, 2, 3),  # dilation with padding
    Case(1, 2, 5, 5, 1, 1, 3, 3, 0, 0),          # stride > kernel: uncovered pixels
    Case(1, 1, 4, 5, 4, 5, 1, 1, 0, 0),          # window = whole input
    Case(1, 2, 2, 3, 1, 2, 1, 1, 1, 2),          # windows entirely in the padding
    Case(3, 1, 1, 1, 3, 3, 1, 1, 1, 1),          # 1x1 input
]


def values(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, kind: str) -> np.ndarray:
    """Random values of one kind.

    spread: magnitudes over 7 decades, so any change of summation order shows;
    ties: small integers and signed zeros, so max-pool windows tie;
    nonfinite: spread values with NaN, +inf and -inf mixed in.
    """
    if kind == "ties":
        v = rng.integers(-2, 3, size=shape).astype(dtype)
        v[rng.random(shape) < 0.15] = -0.0
        return v
    v = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=shape)).astype(dtype)
    if kind == "nonfinite":
        u = rng.random(shape)
        v[u < 0.1] = np.nan
        v[(u >= 0.1) & (u < 0.15)] = np.inf
        v[(u >= 0.15) & (u < 0.2)] = -np.inf
    elif kind != "spread":
        raise ValueError(f"unknown value kind {kind!r}")
    return v


def _image_args(case: Case, dtype: Any, kind: str, rng: np.random.Generator) -> tuple:
    x = values(rng, (case.N, case.C, case.H, case.W), dtype, kind)
    return (x, case.window)


def _col2im_args(case: Case, dtype: Any, kind: str, rng: np.random.Generator) -> tuple:
    col = values(rng, (case.C, case.kh, case.kw, case.N, *case.out), dtype, kind)
    return (col, case.H, case.W, case.window)


def _max_pool_backward_args(case: Case, dtype: Any, kind: str, rng: np.random.Generator) -> tuple:
    x = values(rng, (case.N, case.C, case.H, case.W), dtype, kind)
    _, argmax = cpu.max_pool_forward(x, case.window)
    gy = values(rng, (case.N, case.C, *case.out), dtype, kind)
    return (gy, argmax, case.H, case.W, case.window)


def _avg_pool_backward_args(case: Case, dtype: Any, kind: str, rng: np.random.Generator) -> tuple:
    gy = values(rng, (case.N, case.C, *case.out), dtype, kind)
    return (gy, case.H, case.W, case.window)


ARGS: dict[str, Callable[[Case, Any, str, np.random.Generator], tuple]] = {
    "im2col": _image_args,
    "col2im": _col2im_args,
    "max_pool_forward": _image_args,
    "max_pool_backward": _max_pool_backward_args,
    "avg_pool_forward": _image_args,
    "avg_pool_backward": _avg_pool_backward_args,
}
"""Kernel name -> builder of its arguments. The kernels under test."""


def kernel_args(kernel: str, case: Case, dtype: Any, kind: str, seed: int = 0) -> tuple:
    return ARGS[kernel](case, dtype, kind, np.random.default_rng(seed))


def assert_bitwise_equal(actual: Any, desired: Any, context: str = "") -> None:
    """Equal dtype, shape and bits; NaNs must sit in the same places but their
    payloads may differ (a GPU returns the canonical NaN, a CPU propagates
    the operand's). Unlike assert_array_equal, +0.0 and -0.0 differ."""
    if isinstance(desired, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(desired), context
        for a, d in zip(actual, desired):
            assert_bitwise_equal(a, d, context)
        return
    actual = np.asarray(actual)
    assert actual.dtype == desired.dtype, f"{context}: dtype {actual.dtype} != {desired.dtype}"
    assert actual.shape == desired.shape, f"{context}: shape {actual.shape} != {desired.shape}"
    np.testing.assert_array_equal(actual, desired, err_msg=context)
    if desired.dtype.kind == "f":
        nan = np.isnan(desired)
        np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=context)
        bits = f"u{desired.dtype.itemsize}"
        np.testing.assert_array_equal(actual.view(bits)[~nan], desired.view(bits)[~nan],
                                      err_msg=f"{context}: bit patterns differ (signed zero?)")


class Shaped:
    """Stands in for a C-contiguous array in a plan, which reads only .shape, .strides,
    .dtype and .ndim: a plan for an input too large to allocate."""

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.float32):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self.strides = tuple(int(np.prod(shape[k + 1:])) * self.dtype.itemsize
                             for k in range(len(shape)))
