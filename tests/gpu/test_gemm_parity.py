"""The GEMM kernels' CUDA twins (kernels/cuda_conv.py, kernels/cuda_dense.py) against the
CPU twins, through the dispatch point on a real GPU or the emulated CuPy (conftest.py):
each side within its rounding bound of the exact sums (tests/gemm_bounds.py), so the two
within twice it; and both backends reject the same arguments with the same message."""
from __future__ import annotations

import numpy as np
import pytest

from dualconv import kernels
from dualconv.shapes import Window
from error_bounds import assert_within
from gemm_bounds import conv_bounds, conv_case, dense_bounds, dense_case

pytestmark = pytest.mark.gpu

CONV_CASES = [  # N, C, H, W, O, window, the CPU twin's sizes (cpu_conv's constants)
    (2, 3, 9, 8, 4, Window(3, 3, 1, 1, 1, 1), {"MIN_BLOCK": 1}),  # bands, gx folded wide
    (3, 2, 11, 10, 5, Window(3, 2, 2, 2, 2, 1, 2, 1), {}),  # bands; strided, dilated, rectangular
    (2, 1, 12, 12, 16, Window(5, 5, 1, 1, 2, 2), {"BLOCK_MULTIPLY_ADDS": 0}),  # the whole product
]


def _device(args, cupy):
    return tuple(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x{}x{}x{}x{}_o{}".format(*c[:5]))
def test_conv2d_on_cupy_matches_numpy(monkeypatch, case, bias: bool, dtype) -> None:
    import cupy

    N, C, H, W, O, win, sizes = case
    for name, value in sizes.items():
        monkeypatch.setattr(f"dualconv.kernels.cpu_conv.{name}", value)
    x, w, b, gy = conv_case(N, C, H, W, O, win, bias, dtype, seed=N * H)
    bound = conv_bounds(x, w, b, gy, win)
    y, saved = kernels.conv2d_forward(x, w, b, win)
    assert saved[1].ndim == (6 if sizes.get("BLOCK_MULTIPLY_ADDS") == 0 else 4)  # columns, or x
    y_gpu, saved_gpu = kernels.conv2d_forward(*_device((x, w, b), cupy), win)
    assert saved_gpu[0] == x.shape and isinstance(y_gpu, cupy.ndarray)
    assert_within(cupy.asnumpy(y_gpu), y, 2 * bound["y"], "y: ")
    on_cpu = kernels.conv2d_backward(gy, saved, w, win, True, bias)
    on_gpu = kernels.conv2d_backward(cupy.asarray(gy), saved_gpu, cupy.asarray(w), win, True, bias)
    for name, g, g_gpu in zip(("gx", "gw", "gb"), on_cpu, on_gpu):
        if g is None:
            assert g_gpu is None, name
            continue
        assert g_gpu.dtype == dtype, name
        assert_within(cupy.asnumpy(g_gpu), g, 2 * bound[name], f"{name}: ")
    assert kernels.conv2d_backward(cupy.asarray(gy), saved_gpu, cupy.asarray(w), win, False, bias)[0] is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("feature_major", [False, True])
def test_dense_on_cupy_matches_numpy(feature_major: bool, bias: bool, dtype) -> None:
    import cupy

    x, w, b, gy = dense_case(6, 40, 3, bias, dtype, seed=2, feature_major=feature_major)
    bound = dense_bounds(x, w, b, gy)
    x_gpu, w_gpu, b_gpu, gy_gpu = _device((x, w, b, gy), cupy)
    assert_within(cupy.asnumpy(kernels.dense_forward(x_gpu, w_gpu, b_gpu)), kernels.dense_forward(x, w, b),
                  2 * bound["y"], "y: ")
    on_cpu = kernels.dense_backward(gy, x, w, True, bias)
    on_gpu = kernels.dense_backward(gy_gpu, x_gpu, w_gpu, True, bias)
    for name, g, g_gpu in zip(("gx", "gw", "gb"), on_cpu, on_gpu):
        if g is None:
            assert g_gpu is None, name
            continue
        assert_within(cupy.asnumpy(g_gpu), g, 2 * bound[name], f"{name}: ")
    assert on_gpu[0].flags.f_contiguous == feature_major  # gx stored as x is, as on the CPU


def test_both_backends_reject_the_same_arguments() -> None:
    import cupy

    win = Window(3, 3, 1, 1, 0, 0)
    x, w, b, _ = conv_case(2, 3, 6, 6, 4, win, True, np.float32, seed=0)
    xd, wd, bd, _ = dense_case(4, 6, 2, True, np.float32, seed=0)
    bad = [("conv2d_forward", (x, w[:, :2], b, win)), ("conv2d_forward", (x, w.astype(np.float64), b, win)),
           ("dense_forward", (xd, wd[:5], bd)), ("dense_forward", (xd, wd, bd[:1]))]
    for kernel, args in bad:
        with pytest.raises((ValueError, TypeError)) as on_cpu:
            getattr(kernels, kernel)(*args)
        with pytest.raises(on_cpu.type) as on_gpu:
            getattr(kernels, kernel)(*_device(args, cupy))
        assert str(on_gpu.value) == str(on_cpu.value) and str(on_cpu.value).startswith(f"{kernel}: ")
