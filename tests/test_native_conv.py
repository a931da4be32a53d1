"""The compiled convolution (kernels/cpu_conv.c through dualconv/kernels/native_conv.py):
forward, input gradient and weight gradient within the dot products' rounding bound of
the exact float64 convolution, for any window, batch and channel count (the kernels pad
to whole register blocks); the GEMM twin's bits where every sum is exact; and each
kernel declining what it does not take, so the GEMM twin runs. Each test runs with the
library built for this CPU and with one built for AVX2 (the register blocks a CPU without
AVX-512 gets).
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dualconv.kernels import cpu_conv, native, native_conv, reference
from dualconv.kernels.layout import batch_first, batch_last
from dualconv.shapes import Window
from error_bounds import assert_within, gamma
from window_configs import WindowConfig, random_configs


def batched(configs: list[WindowConfig]) -> list[WindowConfig]:
    """The configs with batches the compiled kernels take (half a register block or more):
    16 (half of float32's 32 with AVX-512, padded), 32 (whole), 33 and 40 (a block and a padded one)."""
    sizes = [16, 32, 33, 40]
    return [WindowConfig(sizes[i % len(sizes)], cfg.C, cfg.H, cfg.W, *cfg.window) for i, cfg in enumerate(configs)]


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            present = {flag for line in info if line.startswith("flags") for flag in line.split()}
    except OSError:
        return False
    return all(flag in present for flag in flags)


@pytest.fixture(scope="module")
def avx2_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("avx2")


@pytest.fixture(autouse=True, params=["native", "avx2"])
def compiled(request, monkeypatch, avx2_cache):
    """Each test twice: with the library built for this CPU (-march=native: AVX-512's blocks
    on both CI kinds), and with one built for AVX2 (-march=haswell: the blocks of half the
    size that a CPU without AVX-512 gets), where this CPU runs AVX2 code."""
    monkeypatch.delenv(native.SWITCH, raising=False)
    if request.param == "avx2":
        if not _cpu_has("avx2", "fma"):
            pytest.skip("this CPU cannot run a build for AVX2")
        monkeypatch.setattr(native, "FLAGS", tuple("-march=haswell" if flag == "-march=native" else flag
                                                   for flag in native.FLAGS))
        monkeypatch.setattr(native, "_loaded", {})
        monkeypatch.setenv("DUALCONV_CACHE", str(avx2_cache))
    lib = native_conv.library()
    if lib is None:
        pytest.skip("no C compiler, or a CPU with neither AVX-512 nor AVX2: the compiled convolution does not run here")
    if request.param == "avx2":
        assert native_conv.blocks(lib) == native_conv.Blocks(32, 4, 4, 6)


def columns(x: np.ndarray, win: Window) -> np.ndarray:
    """The reference im2col in float64 as a (C*kh*kw, N*out_h*out_w) matrix."""
    col = reference.im2col(x.astype(np.float64), win)
    return col.reshape(col.shape[0] * col.shape[1] * col.shape[2], -1)


def exact_forward(x, w, b, win) -> np.ndarray:
    O = w.shape[0]
    col = reference.im2col(x.astype(np.float64), win)
    y = w.astype(np.float64).reshape(O, -1) @ col.reshape(-1, int(np.prod(col.shape[3:])))
    if b is not None:
        y += b.astype(np.float64)[:, None]
    return np.moveaxis(y.reshape(O, *col.shape[3:]), 0, 1)


def draw(cfg, O: int, dtype, seed: int, integers: bool = False):
    rng = np.random.default_rng(seed)
    make = (lambda shape: rng.integers(-3, 4, shape).astype(dtype)) if integers else \
        (lambda shape: rng.standard_normal(shape).astype(dtype))
    return make((cfg.N, cfg.C, cfg.H, cfg.W)), make((O, cfg.C, cfg.kh, cfg.kw)), make(O)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("O", [3, 8, 16])
@pytest.mark.parametrize("cfg", batched(random_configs(seed=21, count=10)), ids=str)
def test_forward_within_the_bound_of_the_exact_convolution(cfg, O: int, dtype) -> None:
    """Any window (stride, padding, dilation), batch and channel count; with and without a
    bias. float64's own reference rounds as much, hence twice the bound there."""
    x, w, b = draw(cfg, O, dtype, seed=O)
    scale = 1 if dtype == np.float32 else 2
    bound = scale * gamma(cfg.C * cfg.kh * cfg.kw + 1, dtype) * exact_forward(np.abs(x), np.abs(w), np.abs(b),
                                                                             cfg.window)
    for bias in (b, None):
        y = native_conv.forward(x, w, bias, cfg.window)
        assert y.shape == (cfg.N, O, *cfg.out) and y.dtype == dtype
        assert batch_last(y).flags.c_contiguous  # stored batch-last, as the next layer reads it
        assert_within(y, exact_forward(x, w, bias, cfg.window), bound)


@pytest.mark.parametrize("cfg", batched(random_configs(seed=22, count=10)), ids=str)
def test_exact_sums_give_the_gemm_twins_bits(monkeypatch, cfg) -> None:
    """Small integers make every sum exact in any order: forward, gw and gx are then the
    bits of the GEMM twin (the compiled kernels off), for O that fills the vectors (16)
    and that does not (5)."""
    for O in (5, 16):
        x, w, b = draw(cfg, O, np.float32, seed=3, integers=True)
        gy = np.random.default_rng(4).integers(-3, 4, (cfg.N, O, *cfg.out)).astype(np.float32)
        monkeypatch.setenv(native.SWITCH, "0")
        y0, saved0 = cpu_conv.conv2d_forward(x, w, b, cfg.window)
        grads0 = cpu_conv.conv2d_backward(gy, saved0, w, cfg.window, True, True)
        monkeypatch.setenv(native.SWITCH, "1")
        y1, saved1 = cpu_conv.conv2d_forward(x, w, b, cfg.window)
        grads1 = cpu_conv.conv2d_backward(gy, saved1, w, cfg.window, True, True)
        assert_array_equal(y1, y0)
        for got, want in zip(grads1, grads0):
            assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("O", [8, 16, 24])
@pytest.mark.parametrize("cfg", batched(random_configs(seed=23, count=10)), ids=str)
def test_weight_gradient_within_the_bound(cfg, O: int, dtype) -> None:
    """gw = gy @ col.T, each of its dot products over N*out_h*out_w terms; O = 16 fills a
    float32 vector and two float64 ones, 8 and 24 take the half-width kernel in float32.
    C*kh*kw under MIN_WEIGHT_ROWS is declined."""
    x, w, _ = draw(cfg, O, dtype, seed=5)
    gy = np.random.default_rng(6).standard_normal((cfg.N, O, *cfg.out)).astype(dtype)
    gw = native_conv.weight_gradient(gy, x, w, cfg.window)
    if cfg.C * cfg.kh * cfg.kw < native_conv.MIN_WEIGHT_ROWS:
        assert gw is None
        return
    col = columns(x, cfg.window)
    g = np.moveaxis(gy, 1, 0).reshape(O, -1).astype(np.float64)  # columns (n, oy, ox), as col's
    scale = 1 if dtype == np.float32 else 2
    bound = scale * gamma(col.shape[1], dtype) * (np.abs(g) @ np.abs(col).T)
    assert gw.shape == w.shape and gw.dtype == dtype
    assert_within(gw.reshape(O, -1), g @ col.T, bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", batched(random_configs(seed=24, count=10)), ids=str)
def test_input_gradient_within_the_bound(cfg, dtype) -> None:
    """gx = col2im(w.T @ gy): each pixel a sum of up to kh*kw terms, each a dot product
    over O; held to gamma(O * kh * kw) of its |terms|, against the float64 loops."""
    O = 5
    _, w, _ = draw(cfg, O, dtype, seed=7)
    gy = np.random.default_rng(8).standard_normal((cfg.N, O, *cfg.out)).astype(dtype)
    gx = native_conv.input_gradient(gy, w, (cfg.N, cfg.C, cfg.H, cfg.W), cfg.window)
    assert gx.shape == (cfg.N, cfg.C, cfg.H, cfg.W) and gx.dtype == dtype

    def fold(wm, g):
        gcol = (wm.reshape(O, -1).T @ np.moveaxis(g, 1, 0).reshape(O, -1))
        gcol = gcol.reshape(cfg.C, cfg.kh, cfg.kw, cfg.N, *cfg.out)
        return reference.col2im(gcol, cfg.H, cfg.W, cfg.window)

    exact = fold(w.astype(np.float64), gy.astype(np.float64))
    scale = 1 if dtype == np.float32 else 2
    bound = scale * gamma(O * cfg.kh * cfg.kw, dtype) * fold(np.abs(w).astype(np.float64),
                                                             np.abs(gy).astype(np.float64))
    assert_within(gx, exact, bound)


def test_hand_worked_convolution() -> None:
    """One 3x3 image, a 2x2 kernel of ones, bias 1: each output is its window's sum + 1;
    gx of gy = 1 everywhere counts the windows covering each pixel (1 2 1 / 2 4 2 / 1 2 1)."""
    x = np.broadcast_to(np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3), (16, 1, 3, 3))  # 16 samples
    w = np.ones((1, 1, 2, 2), dtype=np.float32)
    win = Window(2, 2, 1, 1, 0, 0, 1, 1)
    y = native_conv.forward(x, w, np.ones(1, np.float32), win)
    assert_array_equal(y[5], [[[1 + 2 + 4 + 5 + 1, 2 + 3 + 5 + 6 + 1], [4 + 5 + 7 + 8 + 1, 5 + 6 + 8 + 9 + 1]]])
    gx = native_conv.input_gradient(np.ones((16, 1, 2, 2), np.float32), w, x.shape, win)
    assert_array_equal(gx[15], [[[1, 2, 1], [2, 4, 2], [1, 2, 1]]])


def test_declines_what_it_does_not_take() -> None:
    win = Window(3, 3, 1, 1, 1, 1, 1, 1)
    samples = native_conv.blocks(native_conv.library()).samples(np.dtype(np.float32))  # 32, or 16 for AVX2
    lanes = samples // 2  # floats per vector
    x = np.ones((samples, 16, 5, 5), np.float32)
    w = np.ones((16, 16, 3, 3), np.float32)
    assert native_conv.forward(x, w, None, win) is not None
    assert native_conv.forward(x.astype(np.float16), w.astype(np.float16), None, win) is None
    assert native_conv.forward(x, w.astype(np.float64), None, win) is None  # mixed dtypes
    assert native_conv.forward(x[:0], w, None, win) is None  # an empty batch
    assert native_conv.forward(x[:lanes - 1], w, None, win) is None  # under half a block: padding would cost more
    assert native_conv.forward(x[:lanes], w, None, win) is not None
    assert native_conv.forward(x[:lanes // 2].astype(np.float64), w.astype(np.float64), None, win) is not None
    assert native_conv.input_gradient(np.ones((lanes - 1, 16, 5, 5), np.float32), w, (lanes - 1, 16, 5, 5),
                                      win) is None
    gy = np.ones((samples, 16, 5, 5), np.float32)
    few = lanes // 4  # under half a vector of channels
    assert native_conv.weight_gradient(gy[:, :few], x, w[:few], win) is None
    assert native_conv.weight_gradient(gy[:, :8], x[:, :1], w[:8, :1], win) is None  # 9 rows < MIN_WEIGHT_ROWS
    assert native_conv.weight_gradient(gy[:, :lanes // 2], x, w[:lanes // 2], win) is not None  # half-width
    assert native_conv.weight_gradient(gy, x, w, win) is not None
    assert native_conv.weight_gradient(gy[:lanes - 1], x[:lanes - 1], w, win) is None


def test_batch_first_input_and_outputs_match_batch_last() -> None:
    """A user's (N, C, H, W) array and the same numbers stored batch-last give the same bits."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((20, 2, 7, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    win = Window(3, 3, 1, 1, 1, 1, 1, 1)
    stored = batch_first(np.ascontiguousarray(batch_last(x)))
    assert_array_equal(native_conv.forward(x, w, None, win), native_conv.forward(stored, w, None, win))


def test_a_build_without_the_vectors_it_needs_leaves_the_gemm_twin(monkeypatch) -> None:
    """A library built for a CPU with neither AVX-512 nor AVX2 (conv_blocks() 0): no
    compiled convolution, the GEMM twin's results."""
    class WithoutWideVectors:
        def conv_blocks(self, out) -> int:
            return 0

    monkeypatch.setattr(native_conv, "_library", WithoutWideVectors)
    x = np.ones((32, 2, 6, 6), np.float32)
    w = np.ones((8, 2, 3, 3), np.float32)
    win = Window(3, 3, 1, 1, 0, 0, 1, 1)
    assert native_conv.library() is None and native_conv.forward(x, w, None, win) is None
    y, _ = cpu_conv.conv2d_forward(x, w, None, win)
    assert_array_equal(y, np.full((32, 8, 4, 4), 18, np.float32))
