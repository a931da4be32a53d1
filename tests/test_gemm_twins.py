"""The GEMM kernels' CPU twins (kernels/cpu_conv.py, kernels/cpu_dense.py) against the
textbook twins (kernels/reference.py): conv2d_forward, conv2d_backward, dense_forward
and dense_backward within the products' rounding bounds (tests/gemm_bounds.py), through
every path of the CPU twin: bands of output rows, the whole product with the bias in the
GEMM, cache blocks, the stride-1 input gradient folded wide, a feature-major Dense
input. Also: the dispatch point finds the twins and checks their arguments once, and
every twin takes the same arguments. (The CUDA twin against the CPU twin:
tests/gpu/test_gemm_parity.py.)"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from dualconv import kernels
from dualconv.kernels import checks, cpu_conv, cpu_dense, cuda_conv, cuda_dense, native, native_conv, reference
from dualconv.shapes import Window
from error_bounds import assert_within
from gemm_bounds import conv_bounds, conv_case, dense_bounds, dense_case
from window_configs import WindowConfig, random_configs

CONV_PATHS = ["default", "compiled", "whole", "bands", "blocks"]
CONV_CONFIGS = random_configs(seed=31, count=5) + [
    WindowConfig(3, 2, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1),  # stride 1: gx folds wide in bands
    WindowConfig(2, 3, 10, 7, 2, 3, 1, 1, 0, 2, 2, 1),  # stride 1, padding, dilation
]


def _conv_path(monkeypatch, path: str, cfg, bias: bool) -> int:
    """Set the CPU twin's sizes so that ``path`` runs; returns the output channels O.

    default: what this machine runs; compiled: the compiled kernels (kernels/cpu_conv.c),
    with 16 output channels, a float32 vector's worth, so gw is compiled where C*kh*kw
    reaches MIN_WEIGHT_ROWS (tests/test_native_conv.py takes other channel counts). The GEMM paths run with the compiled kernels off. whole: no
    row fits a band, and the columns do not outweigh the outputs twice over; bands: two
    output rows a band, the stride-1 gx folded wide; blocks: the whole product with its
    GEMMs in blocks of a few columns, gx through col2im."""
    K = cfg.C * cfg.kh * cfg.kw
    out_w = cfg.out[1]
    if path == "default":
        return 3
    if path == "compiled":
        monkeypatch.delenv(native.SWITCH, raising=False)
        if native_conv.library() is None:
            pytest.skip("no C compiler, or a CPU with neither AVX-512 nor AVX2: the compiled convolution does not run here")
        return 16
    monkeypatch.setenv(native.SWITCH, "0")
    if path == "bands":
        O = 2
        monkeypatch.setattr(cpu_conv, "BLOCK_MULTIPLY_ADDS", 2 * O * (K + bias) * out_w * cfg.N)
        monkeypatch.setattr(cpu_conv, "MIN_BLOCK", 1)
        return O
    O = K // 2 + 1
    monkeypatch.setattr(cpu_conv, "BLOCK_MULTIPLY_ADDS", 0)
    if path == "blocks":
        monkeypatch.setattr("dualconv.kernels.blocked.MIN_BLOCK", 1)
        monkeypatch.setattr("dualconv.kernels.blocked.BLOCK_MULTIPLY_ADDS", 7 * O * (K + 1))
        monkeypatch.setattr(cpu_conv, "MIN_BLOCK", 10 ** 9)
    return O


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("path", CONV_PATHS)
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_conv2d_cpu_twin_is_the_textbook_within_rounding(monkeypatch, cfg, path: str, bias: bool,
                                                         dtype) -> None:
    if path == "compiled":
        cfg = WindowConfig(32, cfg.C, cfg.H, cfg.W, *cfg.window)  # a batch the compiled kernels take
    O = _conv_path(monkeypatch, path, cfg, bias)
    win = cfg.window
    folds = []
    wide = cpu_conv.input_gradient_wide
    monkeypatch.setattr(cpu_conv, "input_gradient_wide", lambda *a: folds.append(1) or wide(*a))
    x, w, b, gy = conv_case(cfg.N, cfg.C, cfg.H, cfg.W, O, win, bias, dtype, seed=cfg.N * cfg.H)
    bound = conv_bounds(x, w, b, gy, win)
    y_ref, saved_ref = reference.conv2d_forward(x, w, b, win)
    y, saved = kernels.conv2d_forward(x, w, b, win)  # the dispatch point: the CPU twin
    assert saved[0] == x.shape
    if path in ("bands", "compiled"):
        assert saved[1] is x  # the input kept: gw is made from it
    elif path in ("whole", "blocks"):
        assert saved[1].ndim == 6  # the columns kept
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert y.transpose(1, 2, 3, 0).flags.c_contiguous  # stored batch-last
    assert_within(y, y_ref, 2 * bound["y"], f"{path} y: ")
    got = kernels.conv2d_backward(gy, saved, w, win, need_gx=True, need_gb=bias)
    expected = reference.conv2d_backward(gy, saved_ref, w, win, True, bias)
    _gradients_within(got, expected, bound, dtype, f"{path} ")
    if path in ("bands", "blocks"):
        assert bool(folds) == (path == "bands" and (win.sy, win.sx) == (1, 1))
    gx, gw, _ = kernels.conv2d_backward(gy, saved, w, win, need_gx=False, need_gb=bias)
    assert gx is None
    np.testing.assert_array_equal(gw, got[1])  # the same sums without gx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("blocks", [False, True])
def test_dense_cpu_twin_is_the_textbook_within_rounding(monkeypatch, blocks: bool, feature_major: bool,
                                                        bias: bool, dtype) -> None:
    if blocks:  # sums over the 50 features in blocks of 7
        monkeypatch.setattr("dualconv.kernels.blocked.MIN_BLOCK", 1)
        monkeypatch.setattr("dualconv.kernels.blocked.BLOCK_MULTIPLY_ADDS", 7 * 3 * 5)
    x, w, b, gy = dense_case(5, 50, 3, bias, dtype, seed=4, feature_major=feature_major)
    bound = dense_bounds(x, w, b, gy)
    y = kernels.dense_forward(x, w, b)
    assert y.shape == (5, 3) and y.dtype == dtype and y.flags.c_contiguous
    assert_within(y, reference.dense_forward(x, w, b), 2 * bound["y"], "y: ")
    got = kernels.dense_backward(gy, x, w, need_gx=True, need_gb=bias)
    expected = reference.dense_backward(gy, x, w, True, bias)
    _gradients_within(got, expected, bound, dtype, "")
    assert got[0].flags.f_contiguous == feature_major  # gx stored as x is
    assert kernels.dense_backward(gy, x, w, need_gx=False, need_gb=bias)[0] is None


def test_the_dispatch_point_finds_each_twin() -> None:
    assert kernels.twin_for(np, "conv2d_forward") is cpu_conv
    assert kernels.twin_for(np, "dense_backward") is cpu_dense
    assert kernels.twin_for(np, "im2col").__name__ == "dualconv.kernels.cpu"
    assert kernels.twin_for(np, "sgd_update").sgd_update.__module__ == "dualconv.kernels.cpu_fused"
    assert kernels.twin_for(np).__name__ == "dualconv.kernels.cpu"


@pytest.mark.parametrize("kernel", ["conv2d_forward", "conv2d_backward", "dense_forward", "dense_backward"])
def test_the_dispatch_checks_and_twins_take_the_same_arguments(kernel: str) -> None:
    cpu_twin = {"cpu_conv": cpu_conv, "cpu_dense": cpu_dense}[kernels.HOMES[kernel][0]]
    cuda_twin = {"cuda_conv": cuda_conv, "cuda_dense": cuda_dense}[kernels.HOMES[kernel][1]]
    expected = list(inspect.signature(getattr(cpu_twin, kernel)).parameters)
    for module in (kernels, checks, reference, cuda_twin):
        assert list(inspect.signature(getattr(module, kernel)).parameters) == expected, \
            f"{module.__name__}.{kernel}"


def test_the_dispatch_point_rejects_what_does_not_multiply() -> None:
    """Checked once, before a twin runs, with the kernel's name first."""
    win = Window(3, 3, 1, 1, 0, 0)
    x, w, b, gy = conv_case(2, 3, 6, 6, 4, win, True, np.float32, seed=0)
    with pytest.raises(ValueError, match=r"^conv2d_forward: w must have shape \(O, 3, 3, 3\), got \(4, 2, 3, 3\)"):
        kernels.conv2d_forward(x, w[:, :2], b, win)
    with pytest.raises(TypeError, match=r"^conv2d_forward: w must be float32 like x, got float64"):
        kernels.conv2d_forward(x, w.astype(np.float64), b, win)
    with pytest.raises(ValueError, match=r"^conv2d_forward: b must have shape \(4,\)"):
        kernels.conv2d_forward(x, w, b[:3], win)
    for x_empty, w_empty in [(x, w[:0]), (x[:, :0], w[:, :0])]:  # no output channel, no input channel
        with pytest.raises(ValueError, match=r"^conv2d_forward: w must have at least one output and one input "
                                             r"channel, got shape \(\d, \d, 3, 3\)"):
            kernels.conv2d_forward(x_empty, w_empty, None, win)
    _, saved = kernels.conv2d_forward(x, w, b, win)
    with pytest.raises(ValueError, match=r"^conv2d_backward: gy must have shape \(2, 4, 4, 4\)"):
        kernels.conv2d_backward(gy[:, :, :3], saved, w, win)
    xd, wd, bd, gyd = dense_case(4, 6, 2, True, np.float64, seed=0)
    with pytest.raises(ValueError, match=r"^dense_forward: w must have shape \(6, out\), got \(5, 2\)"):
        kernels.dense_forward(xd, wd[:5], bd)
    with pytest.raises(TypeError, match=r"^dense_forward: x must be float32 or float64, got int64"):
        kernels.dense_forward(xd.astype(np.int64), wd, bd)
    with pytest.raises(ValueError, match=r"^dense_backward: gy must have shape \(4, 2\)"):
        kernels.dense_backward(gyd[:3], xd, wd)


def _gradients_within(got: tuple, expected: tuple, bound: dict, dtype, label: str) -> None:
    """(gx, gw, gb) against the textbook's: the same Nones, shapes and dtype, and each within
    twice its bound (both sides round)."""
    for name, g, g_ref in zip(("gx", "gw", "gb"), got, expected):
        if g_ref is None:
            assert g is None, name
            continue
        assert g.shape == g_ref.shape and g.dtype == dtype, name
        assert_within(g, g_ref, 2 * bound[name], f"{label}{name}: ")
