"""The CPU convolution's input gradient for stride-1 windows, made a kernel offset at a
time and folded "wide" (kernels/cpu_conv.py's input_gradient_wide): each offset's columns
stored at the padded image's pitch with zeros between the rows, so that they fold back
as one contiguous add. With one output channel every column is a single product, the
same number however BLAS computes it, so the fold is held bit for bit to the reference
col2im (the zeros between rows must change no sum: signed zeros, inf and NaN included);
with more, the gradient is held to the exact one within the products' rounding bound."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from dualconv.kernels import cpu, cpu_conv, reference
from dualconv.kernels.layout import columns_batch_first
from error_bounds import assert_within, gamma
from window_configs import WindowConfig, draw_config


@st.composite
def stride_one_configs(draw: st.DrawFn) -> WindowConfig:
    """window_configs.draw_config with the stride set to 1 (padding and dilation as drawn)."""
    cfg = draw_config(lambda lo, hi: draw(st.integers(lo, hi)))
    return WindowConfig(cfg.N, cfg.C, cfg.H, cfg.W, cfg.kh, cfg.kw, 1, 1, cfg.ph, cfg.pw, cfg.dy, cfg.dx)


def _with_specials(a: np.ndarray, seed: int) -> np.ndarray:
    """a with a sprinkling of -0.0, +-inf and NaN."""
    pick = np.random.default_rng(seed).random(a.shape)
    a = a.copy()
    a[pick < 0.3] = -0.0
    a[(pick >= 0.3) & (pick < 0.33)] = np.inf
    a[(pick >= 0.33) & (pick < 0.36)] = -np.inf
    a[(pick >= 0.36) & (pick < 0.38)] = np.nan
    return a


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, 0 * inf
@settings(deadline=None, derandomize=True, max_examples=150)
@given(cfg=stride_one_configs(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1), special=st.booleans())
def test_one_output_channel_folds_bit_for_bit_as_the_reference(cfg: WindowConfig, dtype: type, seed: int,
                                                              special: bool) -> None:
    """O = 1: each column is w[0, c, ky, kx] * gy (one product, rounded once), so the
    result is the reference col2im of those products, to the bit."""
    out_h, out_w = cfg.out
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((1, cfg.C, cfg.kh, cfg.kw)).astype(dtype)
    gy = rng.standard_normal((1, out_h * out_w * cfg.N)).astype(dtype)
    if special:
        gy = _with_specials(gy, seed)
    got = cpu_conv.input_gradient_wide(w, gy, (cfg.N, cfg.C, cfg.H, cfg.W), cfg.window)
    products = w[0].reshape(-1, 1) * gy  # (C*kh*kw, out_h*out_w*N), in im2col's storage order
    col = columns_batch_first(products.reshape(cfg.C, cfg.kh, cfg.kw, out_h, out_w, cfg.N))
    expected = reference.col2im(col, cfg.H, cfg.W, cfg.window)
    assert got.shape == expected.shape and got.dtype == dtype
    assert got.transpose(1, 2, 3, 0).flags.c_contiguous  # stored batch-last, as col2im's
    assert_array_equal(got, expected)
    numbers = ~np.isnan(expected)  # (a NaN's sign is the hardware's: inf - inf gives -NaN on x86)
    assert_array_equal(np.signbit(got[numbers]), np.signbit(expected[numbers]))  # -0.0 vs +0.0


@pytest.mark.parametrize("N,C,O,H,W,pad,k,dilation", [
    (32, 6, 16, 14, 14, 0, 5, 1),   # LeNet's conv2 on a part of 32
    (64, 6, 16, 14, 14, 0, 5, 1),
    (7, 3, 5, 13, 11, 2, 3, 2),     # padding, dilation, a rectangular image
    (9, 2, 40, 20, 15, 1, 3, 1),
])
def test_the_input_gradient_is_col2im_of_the_product(N, C, O, H, W, pad, k, dilation) -> None:
    """Within the rounding bound of the exact col2im(w.T @ gy) (BLAS sums each O-term dot
    product in an order of its own), and to the bit where every sum is exact: small integers."""
    win = WindowConfig(N, C, H, W, k, k, 1, 1, pad, pad, dilation, dilation).window
    out_h, out_w = win.out_size(H, W)
    rng = np.random.default_rng(4)
    w = rng.standard_normal((O, C, k, k)).astype(np.float32)
    gy = rng.standard_normal((O, out_h * out_w * N)).astype(np.float32)
    got = cpu_conv.input_gradient_wide(w, gy, (N, C, H, W), win)

    def fold(w64: np.ndarray, gy64: np.ndarray) -> np.ndarray:
        gcol = (w64.reshape(O, -1).T @ gy64).reshape(C, k, k, out_h, out_w, N)
        return cpu.col2im(columns_batch_first(gcol), H, W, win)

    exact = fold(w.astype(np.float64), gy.astype(np.float64))
    bound = (gamma(O, np.float32) * fold(np.abs(w).astype(np.float64), np.abs(gy).astype(np.float64))
             + gamma(k * k, np.float32) * np.abs(exact))  # the product's rounding, then the fold's
    assert got.shape == (N, C, H, W) and got.dtype == np.float32
    assert_within(got, exact, 2 * bound)
    small_w, small_gy = np.round(w * 2), np.round(gy * 2)  # integers: every sum exact in float32
    assert_array_equal(cpu_conv.input_gradient_wide(small_w, small_gy, (N, C, H, W), win),
                       fold(small_w.astype(np.float64), small_gy.astype(np.float64)).astype(np.float32))


def test_the_wide_fold_is_taken_for_stride_one_products_of_a_block_or_more() -> None:
    """LeNet's conv2 (10 x 10 outputs) at 32 images: 3,200 columns; at 3 images 300,
    under MIN_BLOCK; stride 2 never. (The GPU never: the fold is the CPU twin's alone.)"""
    unit, strided = (WindowConfig(1, 6, 14, 14, 5, 5, s, s, 0, 0, 1, 1).window for s in (1, 2))
    gy32, gy3 = np.zeros((16, 3200), np.float32), np.zeros((16, 300), np.float32)
    assert cpu_conv.folds_wide(gy32, unit)
    assert not cpu_conv.folds_wide(gy3, unit)
    assert not cpu_conv.folds_wide(gy32, strided)
