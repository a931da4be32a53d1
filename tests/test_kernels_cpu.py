"""The CPU twins (dualconv/kernels/cpu.py) against the loop versions of dualconv/kernels/reference.py.

Configs are drawn by hypothesis through window_configs.draw_config (the
generator the CUDA kernel cases use too): rectangular inputs and kernels,
stride, padding, dilation, overlapping windows (stride < kernel), float32 and
float64.
The loop versions sum in the order the CPU twins promise (offsets ky outer,
kx inner, from 0), so everything is compared bit for bit except the
convolution through im2col + matmul, whose sum order is BLAS's.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from dualconv.kernels import cpu, reference
from dualconv.shapes import Window
from dualconv.testing import numerical_gradient
from error_bounds import assert_within, gamma, sum_bound, unit_roundoff
from window_configs import WindowConfig, draw_config

SETTINGS = settings(deadline=None, derandomize=True, max_examples=150)
DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def configs(draw: st.DrawFn, overlapping: bool = False) -> WindowConfig:
    """window_configs.draw_config driven by hypothesis (overlapping: stride < kernel)."""
    return draw_config(lambda lo, hi: draw(st.integers(lo, hi)), overlapping)


def random_input(shape: tuple[int, ...], dtype: type, seed: int, kind: str = "normal") -> np.ndarray:
    """kind: "normal" (tie-free in practice), "ints" (small integers, many ties),
    "nan" (normal with about a fifth of the entries NaN)."""
    rng = np.random.default_rng(seed)
    if kind == "ints":
        return rng.integers(-2, 3, size=shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    if kind == "nan":
        x[rng.random(shape) < 0.2] = np.nan
    return x


def image(cfg: WindowConfig, dtype: type, seed: int, kind: str = "normal") -> np.ndarray:
    return random_input((cfg.N, cfg.C, cfg.H, cfg.W), dtype, seed, kind)


def output(cfg: WindowConfig, dtype: type, seed: int) -> np.ndarray:
    return random_input((cfg.N, cfg.C, *cfg.out), dtype, seed)


SEEDS = st.integers(0, 2**32 - 1)


# --- im2col / col2im -------------------------------------------------------

@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_im2col_matches_reference(cfg: WindowConfig, dtype: type, seed: int) -> None:
    x = image(cfg, dtype, seed)
    got = cpu.im2col(x, cfg.window)
    assert got.shape == (cfg.C, cfg.kh, cfg.kw, cfg.N, *cfg.out)
    assert got.dtype == dtype
    assert_array_equal(got, reference.im2col(x, cfg.window))


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_col2im_matches_reference(cfg: WindowConfig, dtype: type, seed: int) -> None:
    col = random_input((cfg.C, cfg.kh, cfg.kw, cfg.N, *cfg.out), dtype, seed)
    args = (cfg.H, cfg.W, cfg.window)
    got = cpu.col2im(col, *args)
    assert got.shape == (cfg.N, cfg.C, cfg.H, cfg.W)
    assert got.dtype == dtype
    assert got.transpose(1, 2, 3, 0).flags.c_contiguous  # stored batch-last, as conv layers expect
    assert_array_equal(got, reference.col2im(col, *args))


@SETTINGS
@given(cfg=configs(), seed=SEEDS)
def test_col2im_is_adjoint_of_im2col(cfg: WindowConfig, seed: int) -> None:
    x = image(cfg, np.float64, seed)
    c = random_input((cfg.C, cfg.kh, cfg.kw, cfg.N, *cfg.out), np.float64, seed + 1)
    col = cpu.im2col(x, cfg.window)
    img = cpu.col2im(c, cfg.H, cfg.W, cfg.window)
    lhs, rhs = np.vdot(col, c), np.vdot(x, img)
    # <im2col(x), c> = <x, col2im(c)> exactly; in float64 each side is a sum of
    # products (col2im adds up to kh*kw column entries per pixel first).
    bound = sum_bound(col * c) + sum_bound(x * img) + gamma(cfg.kh * cfg.kw, np.float64) * np.vdot(
        np.abs(x), cpu.col2im(np.abs(c), cfg.H, cfg.W, cfg.window))
    assert_within(lhs, rhs, bound)


@SETTINGS
@given(cfg=configs(), O=st.integers(1, 3), dtype=DTYPES, seed=SEEDS, bias=st.booleans())
def test_im2col_matmul_is_the_reference_convolution(cfg: WindowConfig, O: int, dtype: type,
                                                 seed: int, bias: bool) -> None:
    """The column layout is the one a convolution multiplies by w.reshape(O, -1)."""
    x = image(cfg, dtype, seed)
    w = random_input((O, cfg.C, cfg.kh, cfg.kw), dtype, seed + 1)
    b = random_input((O,), dtype, seed + 2) if bias else None
    col = cpu.im2col(x, cfg.window).reshape(cfg.C * cfg.kh * cfg.kw, -1)
    y = (w.reshape(O, -1) @ col).reshape(O, cfg.N, *cfg.out).transpose(1, 0, 2, 3)
    if b is not None:
        y = y + b[None, :, None, None]
    expected = reference.conv2d(x, w, b, (cfg.sy, cfg.sx), (cfg.ph, cfg.pw), (cfg.dy, cfg.dx))
    assert expected.dtype == dtype
    terms = cfg.C * cfg.kh * cfg.kw + (b is not None)
    magnitude = reference.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                   None if b is None else np.abs(b).astype(np.float64),
                                   (cfg.sy, cfg.sx), (cfg.ph, cfg.pw), (cfg.dy, cfg.dx))
    assert_within(y, expected, 2 * gamma(terms, dtype) * magnitude)  # BLAS and loops: any order


# --- max pooling -----------------------------------------------------------

def _check_max_pool_forward(cfg: WindowConfig, x: np.ndarray) -> None:
    y, argmax = cpu.max_pool_forward(x, cfg.window)
    y_ref, argmax_ref = reference.max_pool_forward(x, cfg.window)
    assert y.shape == argmax.shape == (cfg.N, cfg.C, *cfg.out)
    assert y.dtype == x.dtype and argmax.dtype == np.int32
    assert_array_equal(y, y_ref)  # NaN positions must agree too
    assert_array_equal(argmax, argmax_ref)
    values = cpu.max_pool_values(x, cfg.window)  # the maxima alone: the same numbers, signs included
    assert values.dtype == x.dtype
    assert_array_equal(values, y_ref)
    assert_array_equal(np.signbit(values), np.signbit(y_ref))


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_max_pool_forward_matches_reference(cfg: WindowConfig, dtype: type, seed: int) -> None:
    _check_max_pool_forward(cfg, image(cfg, dtype, seed))


@SETTINGS
@given(cfg=configs(overlapping=True), dtype=DTYPES, seed=SEEDS)
def test_max_pool_forward_ties_first_max_wins(cfg: WindowConfig, dtype: type, seed: int) -> None:
    _check_max_pool_forward(cfg, image(cfg, dtype, seed, kind="ints"))


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_max_pool_forward_nan_propagates(cfg: WindowConfig, dtype: type, seed: int) -> None:
    _check_max_pool_forward(cfg, image(cfg, dtype, seed, kind="nan"))


@SETTINGS
@given(cfg=configs(overlapping=True), dtype=DTYPES, seed=SEEDS,
       kind=st.sampled_from(["normal", "ints"]))
def test_max_pool_backward_matches_reference(cfg: WindowConfig, dtype: type, seed: int,
                                         kind: str) -> None:
    x = image(cfg, dtype, seed, kind)
    _, argmax = cpu.max_pool_forward(x, cfg.window)
    g = output(cfg, dtype, seed + 1)
    got = cpu.max_pool_backward(g, argmax, cfg.H, cfg.W, cfg.window)
    assert got.shape == x.shape and got.dtype == dtype
    assert_array_equal(got, reference.max_pool_backward(g, argmax, cfg.H, cfg.W, cfg.window))


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_max_pool_backward_any_config(cfg: WindowConfig, dtype: type, seed: int) -> None:
    x = image(cfg, dtype, seed)
    _, argmax = cpu.max_pool_forward(x, cfg.window)
    g = output(cfg, dtype, seed + 1)
    got = cpu.max_pool_backward(g, argmax, cfg.H, cfg.W, cfg.window)
    assert_array_equal(got, reference.max_pool_backward(g, argmax, cfg.H, cfg.W, cfg.window))


@settings(deadline=None, derandomize=True, max_examples=60)
@given(kh=st.integers(1, 3), kw=st.integers(1, 3), extra_h=st.integers(0, 2), extra_w=st.integers(0, 2),
       N=st.integers(1, 3), dtype=DTYPES, seed=SEEDS, kind=st.sampled_from(["normal", "ints", "nan"]))
def test_max_pool_backward_tiling_windows_bit_for_bit(kh: int, kw: int, extra_h: int, extra_w: int,
                                                      N: int, dtype: type, seed: int, kind: str) -> None:
    """Windows that tile the image (stride = kernel, no padding) take a one-write
    path; it must give the reference's bits, signed zeros, inf and NaN included,
    also when the image has rows or columns past the last whole window."""
    win = Window(kh, kw, kh, kw, 0, 0)
    H, W = 2 * kh + extra_h % kh, 2 * kw + extra_w % kw
    x = random_input((N, 2, H, W), dtype, seed, kind)
    _, argmax = cpu.max_pool_forward(x, win)
    g = random_input((N, 2, *win.out_size(H, W)), dtype, seed + 1)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype)
    g.reshape(-1)[: specials.size] = specials[: g.size]
    got = cpu.max_pool_backward(g, argmax, H, W, win)
    expected = reference.max_pool_backward(g, argmax, H, W, win)
    bits = np.dtype(f"int{8 * np.dtype(dtype).itemsize}")
    assert_array_equal(np.ascontiguousarray(got).view(bits), np.ascontiguousarray(expected).view(bits))


@settings(deadline=None, derandomize=True, max_examples=25)
@given(cfg=configs(overlapping=True), seed=SEEDS)
def test_max_pool_backward_is_the_gradient_of_forward(cfg: WindowConfig, seed: int) -> None:
    """On tie-free input (distinct values 0.1 apart), finite differences of
    sum(max_pool(x) * g) equal max_pool_backward(g). A window that lies wholly
    in the padding (padding > dilated kernel extent) yields -inf and no
    gradient; g is zero there so the loss stays finite."""
    rng = np.random.default_rng(seed)
    size = cfg.N * cfg.C * cfg.H * cfg.W
    x = (rng.permutation(size) * 0.1).reshape(cfg.N, cfg.C, cfg.H, cfg.W)
    y, argmax = cpu.max_pool_forward(x, cfg.window)
    g = np.where(np.isfinite(y), output(cfg, np.float64, seed + 1), 0.0)

    def loss() -> float:
        y = cpu.max_pool_forward(x, cfg.window)[0]
        return float((np.where(np.isfinite(y), y, 0.0) * g).sum())

    analytic = cpu.max_pool_backward(g, argmax, cfg.H, cfg.W, cfg.window)
    # The loss is linear within 0.05 of x, so a central difference with step
    # h = 1e-3 is exact but for rounding: each loss is a sum of y.size products
    # (error <= gamma * sum|y*g|, twice, divided by 2h), and x + h itself rounds
    # (relative error u * (|x| + h) / h in the step).
    h = 1e-3
    numeric = numerical_gradient(loss, x, eps=h)
    finite_y = np.where(np.isfinite(y), y, 0.0)
    bound = (gamma(y.size, np.float64) * np.abs(finite_y * g).sum() / h
             + 2 * unit_roundoff(np.float64) * (np.abs(x) + h) / h * np.abs(analytic))
    assert_within(analytic, numeric, bound)


def test_max_pool_tie_goes_to_first_in_row_major_order() -> None:
    x = np.array([[[[0., 3., 3.],
                    [3., 1., 2.]]]])
    y, argmax = cpu.max_pool_forward(x, Window(2, 3, 1, 1, 0, 0))
    assert_array_equal(y, [[[[3.]]]])
    assert_array_equal(argmax, [[[[1]]]])  # (0, 1), not (0, 2) or (1, 0)
    gx = cpu.max_pool_backward(np.ones_like(y), argmax, 2, 3, Window(2, 3, 1, 1, 0, 0))
    assert_array_equal(gx, [[[[0., 1., 0.], [0., 0., 0.]]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", [1, 3, 40])
def test_max_pool_signed_zero_ties_keep_the_first_zeros_bits(dtype: type, N: int) -> None:
    """Windows of +0.0 and -0.0 (equal as numbers): the maximum is the first zero in
    row-major window order, sign bit included, and argmax points at it; the reference
    loops say the same. N = 40 runs NumPy's vector loops, not only their tails."""
    rng = np.random.default_rng(N)
    x = np.where(rng.random((N, 2, 4, 6)) < 0.5, 0.0, -0.0).astype(dtype)
    x[0, 0, 0, :3] = [-0.0, 0.0, -1.0]
    for win in (Window(2, 2, 2, 2, 0, 0), Window(2, 3, 1, 1, 0, 0)):
        y, argmax = cpu.max_pool_forward(x, win)
        y_ref, argmax_ref = reference.max_pool_forward(x, win)
        assert_array_equal(np.signbit(y), np.signbit(y_ref))
        assert_array_equal(np.signbit(cpu.max_pool_values(x, win)), np.signbit(y_ref))
        assert_array_equal(argmax, argmax_ref)
    assert np.signbit(cpu.max_pool_forward(x, Window(2, 2, 2, 2, 0, 0))[0][0, 0, 0, 0])


def test_max_pool_window_of_more_than_127_offsets() -> None:
    """A 12 x 11 window (132 offsets: argmax weights past int8) with many ties, against
    the reference loops."""
    x = np.random.default_rng(2).integers(0, 4, (2, 3, 25, 23)).astype(np.float32)
    win = Window(12, 11, 3, 2, 1, 0)
    y, argmax = cpu.max_pool_forward(x, win)
    y_ref, argmax_ref = reference.max_pool_forward(x, win)
    assert_array_equal(y, y_ref)
    assert_array_equal(argmax, argmax_ref)
    assert argmax_ref.max() > 0 and (argmax_ref == 0).any()


def test_max_pool_nan_wins_and_first_nan_is_the_argmax() -> None:
    x = np.array([[[[1., np.nan],
                    [np.nan, 5.]]]], dtype=np.float32)
    y, argmax = cpu.max_pool_forward(x, Window(2, 2, 2, 2, 0, 0))
    assert np.isnan(y).all()
    assert_array_equal(argmax, [[[[1]]]])


def test_max_pool_padding_never_wins() -> None:
    """All-negative input, padding 1: the padded border must not make the max 0."""
    x = -np.arange(1., 5.).reshape(1, 1, 2, 2)
    y, argmax = cpu.max_pool_forward(x, Window(2, 2, 1, 1, 1, 1))
    assert_array_equal(y, [[[[-1., -1., -2.],
                             [-1., -1., -2.],
                             [-3., -3., -4.]]]])
    assert_array_equal(argmax, [[[[3, 2, 2],
                                  [1, 0, 0],
                                  [1, 0, 0]]]])


# --- average pooling -------------------------------------------------------

@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_avg_pool_forward_matches_reference(cfg: WindowConfig, dtype: type, seed: int) -> None:
    x = image(cfg, dtype, seed)
    got = cpu.avg_pool_forward(x, cfg.window)
    assert got.shape == (cfg.N, cfg.C, *cfg.out) and got.dtype == dtype
    assert_array_equal(got, reference.avg_pool_forward(x, cfg.window))


@SETTINGS
@given(cfg=configs(overlapping=True), dtype=DTYPES, seed=SEEDS)
def test_avg_pool_backward_matches_reference(cfg: WindowConfig, dtype: type, seed: int) -> None:
    g = output(cfg, dtype, seed)
    got = cpu.avg_pool_backward(g, cfg.H, cfg.W, cfg.window)
    assert got.shape == (cfg.N, cfg.C, cfg.H, cfg.W) and got.dtype == dtype
    assert_array_equal(got, reference.avg_pool_backward(g, cfg.H, cfg.W, cfg.window))


@SETTINGS
@given(cfg=configs(), seed=SEEDS)
def test_avg_pool_backward_is_adjoint_of_forward(cfg: WindowConfig, seed: int) -> None:
    x = image(cfg, np.float64, seed)
    g = output(cfg, np.float64, seed + 1)
    y = cpu.avg_pool_forward(x, cfg.window)
    gx = cpu.avg_pool_backward(g, cfg.H, cfg.W, cfg.window)
    lhs, rhs = np.vdot(y, g), np.vdot(x, gx)
    # Each side: a window sum (kh*kw terms) scaled, then a dot product.
    window = gamma(cfg.kh * cfg.kw + 1, np.float64)
    bound = (sum_bound(y * g) + sum_bound(x * gx)
             + window * (np.vdot(cpu.avg_pool_forward(np.abs(x), cfg.window), np.abs(g))
                         + np.vdot(np.abs(x), cpu.avg_pool_backward(np.abs(g), cfg.H, cfg.W, cfg.window))))
    assert_within(lhs, rhs, bound)


def test_avg_pool_padding_counts_as_zero() -> None:
    x = np.ones((1, 1, 2, 2), dtype=np.float32)
    y = cpu.avg_pool_forward(x, Window(2, 2, 2, 2, 1, 1))
    assert_array_equal(y, np.full((1, 1, 2, 2), 0.25, dtype=np.float32))


@pytest.mark.parametrize("fn", ["im2col", "max_pool_forward", "avg_pool_forward"])
def test_kernels_do_not_modify_their_input(fn: str) -> None:
    x = random_input((2, 2, 5, 4), np.float64, 0)
    before = x.copy()
    getattr(cpu, fn)(x, Window(3, 2, 2, 1, 1, 1, 1, 2))
    assert_array_equal(x, before)


def test_max_pool_keeps_the_first_of_two_signed_zeros() -> None:
    """-0.0 == +0.0, so the first in window order is the maximum, sign bit and all."""
    x = np.array([[[[-0.0, 0.0, 0.0, -0.0]]]], dtype=np.float32)
    y, argmax = cpu.max_pool_forward(x, Window(1, 2, 1, 2, 0, 0))
    assert_array_equal(np.signbit(y), [[[[True, False]]]])
    assert_array_equal(argmax, [[[[0, 0]]]])


def test_max_pool_backward_sends_an_infinite_gradient_only_to_the_winner() -> None:
    x = np.array([[[[1., 4., 2., 3.]]]])
    y, argmax = cpu.max_pool_forward(x, Window(1, 2, 1, 2, 0, 0))
    g = np.array([[[[np.inf, -2.]]]])
    gx = cpu.max_pool_backward(g, argmax, 1, 4, Window(1, 2, 1, 2, 0, 0))
    assert_array_equal(gx, [[[[0., np.inf, 0., -2.]]]])
