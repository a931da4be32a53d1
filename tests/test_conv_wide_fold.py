"""The CPU convolution's input gradient for stride-1 windows, folded "wide"
(cpu.col2im_wide, layers/conv.py's _input_gradient_wide): the columns stored at the
padded image's pitch, each row padded with zeros, so that each kernel offset folds back
as one contiguous add. Held bit for bit to the reference col2im (the zeros between
the rows must change no sum, signed zeros, inf and NaN included), and the layer's
input gradient to the one conv2d_backward makes through im2col's layout."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from dualconv.kernels import cpu, reference
from dualconv.layers import conv
from dualconv.layout import columns_batch_first
from error_bounds import assert_within, gamma
from window_configs import WindowConfig, draw_config


@st.composite
def stride_one_configs(draw: st.DrawFn) -> WindowConfig:
    """window_configs.draw_config with the stride set to 1 (padding and dilation as drawn)."""
    cfg = draw_config(lambda lo, hi: draw(st.integers(lo, hi)))
    return WindowConfig(cfg.N, cfg.C, cfg.H, cfg.W, cfg.kh, cfg.kw, 1, 1, cfg.ph, cfg.pw, cfg.dy, cfg.dx)


def _wide(col: np.ndarray, W: int, pw: int) -> np.ndarray:
    """col (C, kh, kw, N, out_h, out_w) -> (C, kh, kw, out_h, W + 2*pw, N), zeros past out_w."""
    C, kh, kw, N, out_h, out_w = col.shape
    wide = np.zeros((C, kh, kw, out_h, W + 2 * pw, N), dtype=col.dtype)
    wide[..., :out_w, :] = np.moveaxis(col, 3, -1)
    return wide


def _special_columns(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    """Normal numbers with a sprinkling of -0.0, +-inf and NaN."""
    rng = np.random.default_rng(seed)
    col = rng.standard_normal(shape).astype(dtype)
    pick = rng.random(shape)
    col[pick < 0.3] = -0.0
    col[(pick >= 0.3) & (pick < 0.33)] = np.inf
    col[(pick >= 0.33) & (pick < 0.36)] = -np.inf
    col[(pick >= 0.36) & (pick < 0.38)] = np.nan
    return col


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf
@settings(deadline=None, derandomize=True, max_examples=150)
@given(cfg=stride_one_configs(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1), special=st.booleans())
def test_col2im_wide_is_the_reference_col2im_bit_for_bit(cfg: WindowConfig, dtype: type, seed: int,
                                                        special: bool) -> None:
    shape = (cfg.C, cfg.kh, cfg.kw, cfg.N, *cfg.out)
    col = (_special_columns(shape, dtype, seed) if special
           else np.random.default_rng(seed).standard_normal(shape).astype(dtype))
    got = cpu.col2im_wide(_wide(col, cfg.W, cfg.pw), cfg.H, cfg.W, cfg.window)
    expected = reference.col2im(col, cfg.H, cfg.W, cfg.window)
    assert got.shape == expected.shape and got.dtype == dtype
    assert got.transpose(1, 2, 3, 0).flags.c_contiguous  # stored batch-last, as col2im's
    assert_array_equal(got, expected)
    numbers = ~np.isnan(expected)  # (a NaN's sign is the hardware's: inf - inf gives -NaN on x86)
    assert_array_equal(np.signbit(got[numbers]), np.signbit(expected[numbers]))  # -0.0 vs +0.0


def test_a_sum_of_negative_zeros_stays_positive_zero_as_the_reference_makes_it() -> None:
    """Every column -0.0: the reference starts each pixel at +0.0, so every pixel is +0.0."""
    col = np.full((2, 3, 3, 2, 4, 5), -0.0)
    cfg = WindowConfig(2, 2, 6, 7, 3, 3, 1, 1, 0, 0, 1, 1)
    got = cpu.col2im_wide(_wide(col, cfg.W, cfg.pw), cfg.H, cfg.W, cfg.window)
    assert not np.signbit(got).any() and not np.signbit(reference.col2im(col, 6, 7, cfg.window)).any()


@pytest.mark.parametrize("N,C,O,H,W,pad,k,dilation", [
    (32, 6, 16, 14, 14, 0, 5, 1),   # LeNet's conv2 on a part of 32
    (64, 6, 16, 14, 14, 0, 5, 1),
    (7, 3, 5, 13, 11, 2, 3, 2),     # padding, dilation, a rectangular image
    (9, 2, 40, 20, 15, 1, 3, 1),
])
def test_the_wide_input_gradient_is_col2im_of_the_product(N, C, O, H, W, pad, k, dilation) -> None:
    """Within the product's rounding bound of the exact col2im(w.T @ gy) (BLAS sums each
    O-term dot product in an order of its own), and bit for bit the cpu.col2im of the
    same product computed in float64 then rounded where that is exact: small integers."""
    win = WindowConfig(N, C, H, W, k, k, 1, 1, pad, pad, dilation, dilation).window
    out_h, out_w = win.out_size(H, W)
    rng = np.random.default_rng(4)
    w = rng.standard_normal((O, C, k, k)).astype(np.float32)
    gy = rng.standard_normal((O, out_h * out_w * N)).astype(np.float32)
    got = conv._input_gradient_wide(w, gy, (N, C, H, W), win)

    def fold(w64: np.ndarray, gy64: np.ndarray) -> np.ndarray:
        gcol = (w64.reshape(O, -1).T @ gy64).reshape(C, k, k, out_h, out_w, N)
        return cpu.col2im(columns_batch_first(gcol), H, W, win)

    exact = fold(w.astype(np.float64), gy.astype(np.float64))
    bound = (gamma(O, np.float32) * fold(np.abs(w).astype(np.float64), np.abs(gy).astype(np.float64))
             + gamma(k * k, np.float32) * np.abs(exact))  # the product's rounding, then the fold's
    assert got.shape == (N, C, H, W) and got.dtype == np.float32
    assert_within(got, exact, 2 * bound)
    small_w, small_gy = np.round(w * 2), np.round(gy * 2)  # integers: every sum exact in float32
    assert_array_equal(conv._input_gradient_wide(small_w, small_gy, (N, C, H, W), win),
                       fold(small_w.astype(np.float64), small_gy.astype(np.float64)).astype(np.float32))


def test_the_wide_fold_is_taken_for_stride_one_products_of_a_block_or_more() -> None:
    """Worked by hand: LeNet's conv2 (16 x 6 x 5 x 5 on 14 x 14) at 32 images: 3,200
    columns, 150 * 10 * 14 * 32 = 672,000 wide numbers; at 64 twice that, over 2^20;
    at 3 images 300 columns, under MIN_BLOCK; stride 2 never; the GPU never."""
    w = np.zeros((16, 6, 5, 5), np.float32)
    win = WindowConfig(1, 6, 14, 14, 5, 5, 1, 1, 0, 0, 1, 1).window
    gy32, gy64, gy3 = (np.zeros((16, 100 * n), np.float32) for n in (32, 64, 3))
    assert conv._folds_wide(gy32, (32, 6, 14, 14), w, win)
    assert not conv._folds_wide(gy64, (64, 6, 14, 14), w, win)
    assert not conv._folds_wide(gy3, (3, 6, 14, 14), w, win)
    strided = WindowConfig(1, 6, 23, 23, 5, 5, 2, 2, 0, 0, 1, 1).window  # 10 x 10 outputs too
    assert not conv._folds_wide(gy32, (32, 6, 23, 23), w, strided)
    assert not conv._folds_wide(object(), (32, 6, 14, 14), w, win)
