"""kernels_numpy against the naive loop oracles of kernels_naive.

Configs are drawn by hypothesis: rectangular inputs and kernels, stride,
padding, dilation, overlapping windows (stride < kernel), float32 and float64.
The naive kernels sum in the order kernels_numpy promises (offsets ky outer,
kx inner, from 0), so everything is compared bit for bit except the
convolution through im2col + matmul, whose sum order is BLAS's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from dualconv import kernels_naive as naive
from dualconv import kernels_numpy as kn
from dualconv.shapes import get_conv_outsize
from dualconv.testing import numerical_gradient

SETTINGS = settings(deadline=None, derandomize=True, max_examples=150)
DTYPES = st.sampled_from([np.float32, np.float64])


@dataclass(frozen=True)
class Config:
    N: int
    C: int
    H: int
    W: int
    kh: int
    kw: int
    sy: int
    sx: int
    ph: int
    pw: int
    dy: int
    dx: int

    @property
    def out_h(self) -> int:
        return get_conv_outsize(self.H, self.kh, self.sy, self.ph, self.dy)

    @property
    def out_w(self) -> int:
        return get_conv_outsize(self.W, self.kw, self.sx, self.pw, self.dx)

    @property
    def window(self) -> tuple[int, int, int, int, int, int, int, int]:
        """(kh, kw, sy, sx, ph, pw, dy, dx), the tail of every kernel signature."""
        return (self.kh, self.kw, self.sy, self.sx, self.ph, self.pw, self.dy, self.dx)


@st.composite
def configs(draw: st.DrawFn, max_dilation: int = 3) -> Config:
    """A config whose output is at least 1x1; H and W are drawn independently."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dy, dx = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    min_h = max(1, dy * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dx * (kw - 1) + 1 - 2 * pw)
    H = draw(st.integers(min_h, min_h + 6))
    W = draw(st.integers(min_w, min_w + 6))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    cfg = Config(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    assert cfg.out_h >= 1 and cfg.out_w >= 1
    return cfg


@st.composite
def overlapping_configs(draw: st.DrawFn) -> Config:
    """A config whose pooling windows overlap: stride < kernel on both axes."""
    cfg = draw(configs())
    kh, kw = max(cfg.kh, 2), max(cfg.kw, 2)
    sy, sx = min(cfg.sy, kh - 1), min(cfg.sx, kw - 1)
    min_h = max(1, cfg.dy * (kh - 1) + 1 - 2 * cfg.ph)
    min_w = max(1, cfg.dx * (kw - 1) + 1 - 2 * cfg.pw)
    return Config(cfg.N, cfg.C, max(cfg.H, min_h), max(cfg.W, min_w),
                  kh, kw, sy, sx, cfg.ph, cfg.pw, cfg.dy, cfg.dx)


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


def image(cfg: Config, dtype: type, seed: int, kind: str = "normal") -> np.ndarray:
    return random_input((cfg.N, cfg.C, cfg.H, cfg.W), dtype, seed, kind)


def output(cfg: Config, dtype: type, seed: int) -> np.ndarray:
    return random_input((cfg.N, cfg.C, cfg.out_h, cfg.out_w), dtype, seed)


SEEDS = st.integers(0, 2**32 - 1)


# --- im2col / col2im -------------------------------------------------------

@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_im2col_matches_naive(cfg: Config, dtype: type, seed: int) -> None:
    x = image(cfg, dtype, seed)
    got = kn.im2col(x, *cfg.window)
    assert got.shape == (cfg.C, cfg.kh, cfg.kw, cfg.N, cfg.out_h, cfg.out_w)
    assert got.dtype == dtype
    assert_array_equal(got, naive.im2col(x, *cfg.window))


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_col2im_matches_naive(cfg: Config, dtype: type, seed: int) -> None:
    col = random_input((cfg.C, cfg.kh, cfg.kw, cfg.N, cfg.out_h, cfg.out_w), dtype, seed)
    args = (cfg.H, cfg.W, cfg.sy, cfg.sx, cfg.ph, cfg.pw, cfg.dy, cfg.dx)
    got = kn.col2im(col, *args)
    assert got.shape == (cfg.N, cfg.C, cfg.H, cfg.W)
    assert got.dtype == dtype
    assert got.flags.c_contiguous
    assert_array_equal(got, naive.col2im(col, *args))


@SETTINGS
@given(cfg=configs(), seed=SEEDS)
def test_col2im_is_adjoint_of_im2col(cfg: Config, seed: int) -> None:
    x = image(cfg, np.float64, seed)
    c = random_input((cfg.C, cfg.kh, cfg.kw, cfg.N, cfg.out_h, cfg.out_w), np.float64, seed + 1)
    lhs = np.vdot(kn.im2col(x, *cfg.window), c)
    rhs = np.vdot(x, kn.col2im(c, cfg.H, cfg.W, cfg.sy, cfg.sx, cfg.ph, cfg.pw, cfg.dy, cfg.dx))
    assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(cfg=configs(), O=st.integers(1, 3), dtype=DTYPES, seed=SEEDS, bias=st.booleans())
def test_im2col_matmul_is_the_naive_convolution(cfg: Config, O: int, dtype: type, seed: int,
                                                 bias: bool) -> None:
    """The column layout is the one a convolution multiplies by w.reshape(O, -1)."""
    x = image(cfg, dtype, seed)
    w = random_input((O, cfg.C, cfg.kh, cfg.kw), dtype, seed + 1)
    b = random_input((O,), dtype, seed + 2) if bias else None
    col = kn.im2col(x, *cfg.window).reshape(cfg.C * cfg.kh * cfg.kw, -1)
    y = (w.reshape(O, -1) @ col).reshape(O, cfg.N, cfg.out_h, cfg.out_w).transpose(1, 0, 2, 3)
    if b is not None:
        y = y + b[None, :, None, None]
    expected = naive.conv2d_naive(x, w, b, (cfg.sy, cfg.sx), (cfg.ph, cfg.pw), (cfg.dy, cfg.dx))
    assert expected.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_allclose(y, expected, rtol=tol, atol=tol)


# --- max pooling -----------------------------------------------------------

def _check_max_pool_forward(cfg: Config, x: np.ndarray) -> None:
    y, argmax = kn.max_pool_forward(x, *cfg.window)
    y_ref, argmax_ref = naive.max_pool_forward(x, *cfg.window)
    assert y.shape == argmax.shape == (cfg.N, cfg.C, cfg.out_h, cfg.out_w)
    assert y.dtype == x.dtype and argmax.dtype == np.int32
    assert_array_equal(y, y_ref)  # NaN positions must agree too
    assert_array_equal(argmax, argmax_ref)


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_max_pool_forward_matches_naive(cfg: Config, dtype: type, seed: int) -> None:
    _check_max_pool_forward(cfg, image(cfg, dtype, seed))


@SETTINGS
@given(cfg=overlapping_configs(), dtype=DTYPES, seed=SEEDS)
def test_max_pool_forward_ties_first_max_wins(cfg: Config, dtype: type, seed: int) -> None:
    _check_max_pool_forward(cfg, image(cfg, dtype, seed, kind="ints"))


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_max_pool_forward_nan_propagates(cfg: Config, dtype: type, seed: int) -> None:
    _check_max_pool_forward(cfg, image(cfg, dtype, seed, kind="nan"))


@SETTINGS
@given(cfg=overlapping_configs(), dtype=DTYPES, seed=SEEDS, kind=st.sampled_from(["normal", "ints"]))
def test_max_pool_backward_matches_naive(cfg: Config, dtype: type, seed: int, kind: str) -> None:
    x = image(cfg, dtype, seed, kind)
    _, argmax = kn.max_pool_forward(x, *cfg.window)
    g = output(cfg, dtype, seed + 1)
    got = kn.max_pool_backward(g, argmax, cfg.H, cfg.W, *cfg.window)
    assert got.shape == x.shape and got.dtype == dtype
    assert_array_equal(got, naive.max_pool_backward(g, argmax, cfg.H, cfg.W, *cfg.window))


@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_max_pool_backward_any_config(cfg: Config, dtype: type, seed: int) -> None:
    x = image(cfg, dtype, seed)
    _, argmax = kn.max_pool_forward(x, *cfg.window)
    g = output(cfg, dtype, seed + 1)
    got = kn.max_pool_backward(g, argmax, cfg.H, cfg.W, *cfg.window)
    assert_array_equal(got, naive.max_pool_backward(g, argmax, cfg.H, cfg.W, *cfg.window))


@settings(deadline=None, derandomize=True, max_examples=25)
@given(cfg=overlapping_configs(), seed=SEEDS)
def test_max_pool_backward_is_the_gradient_of_forward(cfg: Config, seed: int) -> None:
    """On tie-free input (distinct values 0.1 apart), finite differences of
    sum(max_pool(x) * g) equal max_pool_backward(g). A window that lies wholly
    in the padding (padding > dilated kernel extent) yields -inf and no
    gradient; g is zero there so the loss stays finite."""
    rng = np.random.default_rng(seed)
    size = cfg.N * cfg.C * cfg.H * cfg.W
    x = (rng.permutation(size) * 0.1).reshape(cfg.N, cfg.C, cfg.H, cfg.W)
    y, argmax = kn.max_pool_forward(x, *cfg.window)
    g = np.where(np.isfinite(y), output(cfg, np.float64, seed + 1), 0.0)

    def loss() -> float:
        y = kn.max_pool_forward(x, *cfg.window)[0]
        return float((np.where(np.isfinite(y), y, 0.0) * g).sum())

    analytic = kn.max_pool_backward(g, argmax, cfg.H, cfg.W, *cfg.window)
    numeric = numerical_gradient(loss, x)
    assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_max_pool_tie_goes_to_first_in_row_major_order() -> None:
    x = np.array([[[[0., 3., 3.],
                    [3., 1., 2.]]]])
    y, argmax = kn.max_pool_forward(x, 2, 3, 1, 1, 0, 0)
    assert_array_equal(y, [[[[3.]]]])
    assert_array_equal(argmax, [[[[1]]]])  # (0, 1), not (0, 2) or (1, 0)
    dx = kn.max_pool_backward(np.ones_like(y), argmax, 2, 3, 2, 3, 1, 1, 0, 0)
    assert_array_equal(dx, [[[[0., 1., 0.], [0., 0., 0.]]]])


def test_max_pool_nan_wins_and_first_nan_is_the_argmax() -> None:
    x = np.array([[[[1., np.nan],
                    [np.nan, 5.]]]], dtype=np.float32)
    y, argmax = kn.max_pool_forward(x, 2, 2, 2, 2, 0, 0)
    assert np.isnan(y).all()
    assert_array_equal(argmax, [[[[1]]]])


def test_max_pool_padding_never_wins() -> None:
    """All-negative input, padding 1: the padded border must not make the max 0."""
    x = -np.arange(1., 5.).reshape(1, 1, 2, 2)
    y, argmax = kn.max_pool_forward(x, 2, 2, 1, 1, 1, 1)
    assert_array_equal(y, [[[[-1., -1., -2.],
                             [-1., -1., -2.],
                             [-3., -3., -4.]]]])
    assert_array_equal(argmax, [[[[3, 2, 2],
                                  [1, 0, 0],
                                  [1, 0, 0]]]])


# --- average pooling -------------------------------------------------------

@SETTINGS
@given(cfg=configs(), dtype=DTYPES, seed=SEEDS)
def test_avg_pool_forward_matches_naive(cfg: Config, dtype: type, seed: int) -> None:
    x = image(cfg, dtype, seed)
    got = kn.avg_pool_forward(x, *cfg.window)
    assert got.shape == (cfg.N, cfg.C, cfg.out_h, cfg.out_w) and got.dtype == dtype
    assert_array_equal(got, naive.avg_pool_forward(x, *cfg.window))


@SETTINGS
@given(cfg=overlapping_configs(), dtype=DTYPES, seed=SEEDS)
def test_avg_pool_backward_matches_naive(cfg: Config, dtype: type, seed: int) -> None:
    g = output(cfg, dtype, seed)
    got = kn.avg_pool_backward(g, cfg.H, cfg.W, *cfg.window)
    assert got.shape == (cfg.N, cfg.C, cfg.H, cfg.W) and got.dtype == dtype
    assert_array_equal(got, naive.avg_pool_backward(g, cfg.H, cfg.W, *cfg.window))


@SETTINGS
@given(cfg=configs(), seed=SEEDS)
def test_avg_pool_backward_is_adjoint_of_forward(cfg: Config, seed: int) -> None:
    x = image(cfg, np.float64, seed)
    g = output(cfg, np.float64, seed + 1)
    lhs = np.vdot(kn.avg_pool_forward(x, *cfg.window), g)
    rhs = np.vdot(x, kn.avg_pool_backward(g, cfg.H, cfg.W, *cfg.window))
    assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_avg_pool_padding_counts_as_zero() -> None:
    x = np.ones((1, 1, 2, 2), dtype=np.float32)
    y = kn.avg_pool_forward(x, 2, 2, 2, 2, 1, 1)
    assert_array_equal(y, np.full((1, 1, 2, 2), 0.25, dtype=np.float32))


@pytest.mark.parametrize("fn", ["im2col", "max_pool_forward", "avg_pool_forward"])
def test_kernels_do_not_modify_their_input(fn: str) -> None:
    x = random_input((2, 2, 5, 4), np.float64, 0)
    before = x.copy()
    getattr(kn, fn)(x, 3, 2, 2, 1, 1, 1, 1, 2)
    assert_array_equal(x, before)
