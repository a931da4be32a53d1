"""Conv2D's CPU twin (dualconv/kernels/cpu_conv.py): its columns with a row of ones (the
bias as one more product term), its forward in bands of output rows
(conv2d_forward_bands, one small matrix of columns reused band after band) and the
weight gradient made from the input a band at a time (conv2d_weight_gradient_bands):
within the dot products' rounding bound of the exact convolution, for any window, band
size and input memory order (BLAS may sum a band's dot products in another order than
the whole product's, so the two may differ in the last bits), the same bits as the
whole product's where every sum is exact; and an eval-mode backward that equals
training mode's."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv import kernels
from dualconv.kernels import cpu_conv, reference
from dualconv.shapes import Window
from dualconv.kernels.cpu_conv import (band_piece, band_rows, conv2d_backward, conv2d_forward_bands,
                                       conv2d_weight_gradient_bands)
from error_bounds import assert_within, gamma
from window_configs import random_configs


@pytest.fixture(autouse=True)
def gemm_twin(monkeypatch):
    """These tests are of the GEMM twin's bands: the compiled kernels (native_conv.py) off."""
    monkeypatch.setenv("DUALCONV_NATIVE", "0")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 2, 3, 1000])
@pytest.mark.parametrize("cfg", random_configs(seed=11, count=12), ids=str)
def test_bands_give_the_same_outputs_as_the_whole_product(cfg, rows: int, dtype) -> None:
    """Bands of one row, of a few rows with a shorter last band, and one band for all:
    the outputs within the rounding bound of the exact convolution. In float64 the
    float64 reference rounds as much as the bands may, so the two are held within twice
    the bound."""
    rng = np.random.default_rng(5)
    O = 3
    x = rng.standard_normal((cfg.N, cfg.C, cfg.H, cfg.W)).astype(dtype)
    w = rng.standard_normal((O, cfg.C, cfg.kh, cfg.kw)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    exact = _exact(x, w, b, cfg.window)
    bound = ((1 if dtype == np.float32 else 2) * gamma(cfg.C * cfg.kh * cfg.kw + 1, dtype)
             * _exact(np.abs(x), np.abs(w), np.abs(b), cfg.window))
    got = conv2d_forward_bands(x, w, b, cfg.window, rows)
    assert got.shape == exact.shape and got.dtype == dtype
    assert_within(got, exact, bound, "bands: ")
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)  # as activations are stored
    assert_array_equal(conv2d_forward_bands(batch_last, w, b, cfg.window, rows), got)
    without_bias = conv2d_forward_bands(x, w, None, cfg.window, rows)
    assert_within(without_bias, _exact(x, w, None, cfg.window), bound, "no bias: ")


@pytest.mark.parametrize("piece", [1, 2, 3])
@pytest.mark.parametrize("cfg", random_configs(seed=15, count=12), ids=str)
def test_rows_in_pieces_give_the_same_outputs_as_the_whole_product(cfg, piece: int) -> None:
    """One-row bands cut into pieces of output columns (a last piece shorter where they do
    not divide): every output within the rounding bound of the exact convolution, with
    and without a bias, the same bits for either memory order of the input; and with
    small integers, where every sum is exact, the bits of whole rows."""
    rng = np.random.default_rng(6)
    O = 3
    x = rng.standard_normal((cfg.N, cfg.C, cfg.H, cfg.W)).astype(np.float32)
    w = rng.standard_normal((O, cfg.C, cfg.kh, cfg.kw)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    bound = gamma(cfg.C * cfg.kh * cfg.kw + 1, np.float32) * _exact(np.abs(x), np.abs(w), np.abs(b), cfg.window)
    got = conv2d_forward_bands(x, w, b, cfg.window, 1, piece)
    assert got.shape == (cfg.N, O, *cfg.out) and got.dtype == np.float32
    assert_within(got, _exact(x, w, b, cfg.window), bound, "pieces: ")
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    assert_array_equal(conv2d_forward_bands(batch_last, w, b, cfg.window, 1, piece), got)
    assert_within(conv2d_forward_bands(x, w, None, cfg.window, 1, piece), _exact(x, w, None, cfg.window),
                  bound, "pieces, no bias: ")
    small = [rng.integers(-3, 4, a.shape).astype(np.float32) for a in (x, w, b)]
    assert_array_equal(conv2d_forward_bands(*small, cfg.window, 1, piece),
                       conv2d_forward_bands(*small, cfg.window, 1, None))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("row_limit", [1, 2, None])
@pytest.mark.parametrize("cfg", random_configs(seed=13, count=12), ids=str)
def test_weight_gradient_in_bands_is_gy_times_the_columns(monkeypatch, cfg, row_limit, dtype) -> None:
    """gw = gy @ col.T made from the input a band at a time: bands of one row, of two
    (BLOCK_MULTIPLY_ADDS set so a band holds that many) and the machine's own, within
    gamma(P) of its |terms| (P = N*out_h*out_w, the length of each dot product) of the
    float64 product of the reference im2col's columns."""
    O = 3
    out_h, out_w = cfg.out
    if row_limit is not None:
        monkeypatch.setattr("dualconv.kernels.cpu_conv.BLOCK_MULTIPLY_ADDS",
                            row_limit * O * cfg.C * cfg.kh * cfg.kw * out_w * cfg.N)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((cfg.N, cfg.C, cfg.H, cfg.W)).astype(dtype)
    w = np.zeros((O, cfg.C, cfg.kh, cfg.kw), dtype=dtype)  # only its shape matters
    gy_mat = rng.standard_normal((O, out_h * out_w * cfg.N)).astype(dtype)  # batch-last, as the layer's
    col = reference.im2col(x.astype(np.float64), cfg.window)  # (C, kh, kw, N, out_h, out_w)
    col_mat = np.moveaxis(col, 3, -1).reshape(cfg.C * cfg.kh * cfg.kw, -1)  # columns (oy, ox, n)
    scale = 1 if dtype == np.float32 else 2  # float64's reference rounds as much
    gw = conv2d_weight_gradient_bands(x, gy_mat, w, cfg.window)
    assert gw.shape == w.shape and gw.dtype == dtype
    g64 = gy_mat.astype(np.float64)
    bound = scale * gamma(col_mat.shape[1], dtype) * (np.abs(g64) @ np.abs(col_mat).T)
    assert_within(gw.reshape(O, -1), g64 @ col_mat.T, bound)


@pytest.mark.parametrize("cfg", random_configs(seed=14, count=8), ids=str)
def test_weight_gradient_in_bands_equals_the_kept_columns_where_sums_are_exact(monkeypatch, cfg) -> None:
    """Small integers in x and gy make every partial sum exact in float32, whatever the
    order: then the bands give the bits of conv2d_backward's gw from the whole column
    matrix (one-row bands, so there are several)."""
    O = 4
    out_h, out_w = cfg.out
    monkeypatch.setattr("dualconv.kernels.cpu_conv.BLOCK_MULTIPLY_ADDS", O * cfg.C * cfg.kh * cfg.kw * out_w * cfg.N)
    rng = np.random.default_rng(8)
    x = rng.integers(-3, 4, (cfg.N, cfg.C, cfg.H, cfg.W)).astype(np.float32)
    w = rng.integers(-3, 4, (O, cfg.C, cfg.kh, cfg.kw)).astype(np.float32)
    gy = rng.integers(-3, 4, (cfg.N, O, out_h, out_w)).astype(np.float32)
    saved = (x.shape, kernels.im2col(x, cfg.window))  # the columns kept, as a whole forward keeps them
    _, gw_whole, _ = conv2d_backward(gy, saved, w, cfg.window, need_gx=False, need_gb=False)
    gy_mat = np.ascontiguousarray(np.moveaxis(gy, 0, -1)).reshape(O, -1)
    assert_array_equal(conv2d_weight_gradient_bands(x, gy_mat, w, cfg.window), gw_whole)


def _exact(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win) -> np.ndarray:
    """The convolution in float64 from the reference im2col: exact for float32's purposes
    (its rounding is 2^-29 of float32's)."""
    col = reference.im2col(x.astype(np.float64), win)  # (C, kh, kw, N, out_h, out_w)
    O = w.shape[0]
    y = w.astype(np.float64).reshape(O, -1) @ col.reshape(col.shape[0] * col.shape[1] * col.shape[2], -1)
    if b is not None:
        y += b.astype(np.float64)[:, None]
    return np.moveaxis(y.reshape(O, *col.shape[3:]), 0, 1)


@pytest.mark.parametrize("cfg", random_configs(seed=12, count=12), ids=str)
def test_im2col_with_ones_is_im2col_and_a_row_of_ones(cfg) -> None:
    """The columns the CPU convolution multiplies by [w | b]: im2col's (checked against
    the reference loops elsewhere), as a matrix in its storage order, then ones."""
    x = np.random.default_rng(3).standard_normal((cfg.N, cfg.C, cfg.H, cfg.W))
    matrix = cpu_conv.im2col_with_ones(x, cfg.window)
    col = kernels.im2col(x, cfg.window)  # (C, kh, kw, N, out_h, out_w)
    expected = np.moveaxis(col, 3, -1).reshape(cfg.C * cfg.kh * cfg.kw, -1)
    assert matrix.shape == (expected.shape[0] + 1, expected.shape[1]) and matrix.dtype == x.dtype
    assert_array_equal(matrix[:-1], expected)
    assert_array_equal(matrix[-1], np.ones(expected.shape[1]))


def test_bands_are_sized_for_the_small_matrix_kernels() -> None:
    """A band holds the most output rows whose product stays within BLOCK_MULTIPLY_ADDS
    (one at least). Bands run where the columns outweigh the outputs twice over, and
    also where one row's product is within the limit. Worked by hand for 28x28
    and 14x14 inputs, 5x5 kernels."""
    same, valid = Window(5, 5, 1, 1, 2, 2, 1, 1), Window(5, 5, 1, 1, 0, 0, 1, 1)
    lenet1, lenet2, weidman = np.zeros((6, 1, 5, 5)), np.zeros((16, 6, 5, 5)), np.zeros((32, 1, 5, 5))
    # LeNet's conv1 at 64 images: a row is 6 * 26 * 28 * 64 = 279,552 multiply-adds: 3 rows
    assert band_rows(lenet1, True, (64, 1, 28, 28), same) == 3
    assert band_rows(lenet1, False, (64, 1, 28, 28), same) == 3  # 268,800 a row
    assert band_rows(lenet1, True, (32, 1, 28, 28), same) == 7  # 139,776 a row
    # conv2 at 64: a row is 16 * 151 * 10 * 64 = 1,546,240, but 150 column numbers to 16 outputs
    assert band_rows(lenet2, True, (64, 6, 14, 14), valid) == 1
    # weidman's conv (25 column numbers against 32 outputs): at 32 a row is 32 * 26 * 28 *
    # 32 = 745,472, in bands; at 64 twice that: whole
    assert band_rows(weidman, True, (32, 1, 28, 28), same) == 1
    assert band_rows(weidman, True, (64, 1, 28, 28), same) is None
    assert band_rows(weidman, True, (8, 1, 28, 28), same) == 5  # 186,368 a row


def test_rows_over_the_limit_go_in_pieces() -> None:
    """Where one output row's product is over BLOCK_MULTIPLY_ADDS, the row goes in as few
    equal pieces of output columns within it as will do; otherwise a row is a band. Worked
    by hand for a conv 16@5x5 over 8 channels (14x14 -> 10x10), LeNet's conv2 and weidman's
    conv."""
    valid, same = Window(5, 5, 1, 1, 0, 0, 1, 1), Window(5, 5, 1, 1, 2, 2, 1, 1)
    fast2 = np.zeros((16, 8, 5, 5))
    # at 32 images an output column is 16 * 201 * 32 = 102,912 multiply-adds: 9 fit, so
    # a row of 10 goes as two pieces of 5
    assert band_piece(fast2, True, (32, 8, 14, 14), valid) == 5
    # at 64, 205,824: 4 fit, so three pieces (of 4, 4 and 2)
    assert band_piece(fast2, True, (64, 8, 14, 14), valid) == 4
    # at 2, 6,432: a whole row (64,320) fits
    assert band_piece(fast2, True, (2, 8, 14, 14), valid) is None
    # LeNet's conv2 at 32: 16 * 151 * 32 = 77,312 a column, 12 fit, more than a row's 10
    assert band_piece(np.zeros((16, 6, 5, 5)), True, (32, 6, 14, 14), valid) is None
    # weidman at 32: 32 * 26 * 32 = 26,624 a column: 37 fit, more than a row's 28
    assert band_piece(np.zeros((32, 1, 5, 5)), True, (32, 1, 28, 28), same) is None
    # exactly a row's worth: 16 * (20 * 9 + 1) * 32 = 92,672 a column, 10 fit, a row of 10
    assert band_piece(np.zeros((16, 20, 3, 3)), True, (32, 20, 12, 12), Window(3, 3, 1, 1, 0, 0, 1, 1)) is None
    # the bias's column decides: 16 * 195 * 32 = 99,840 (10 fit) without it, 100,352 (9) with it
    one_by_five = Window(1, 5, 1, 1, 0, 0, 1, 1)
    assert band_piece(np.zeros((16, 39, 1, 5)), False, (32, 39, 14, 14), one_by_five) is None
    assert band_piece(np.zeros((16, 39, 1, 5)), True, (32, 39, 14, 14), one_by_five) == 5
    assert band_piece(fast2, True, (0, 8, 14, 14), valid) is None  # an empty batch


def test_the_forward_takes_pieces_where_a_row_is_over_the_limit(monkeypatch) -> None:
    """conv2d_forward of a conv 16@5x5 over 8 channels at 32 images multiplies rows in pieces of 5
    output columns (band_piece's), within the rounding bound of the exact convolution; a
    piece asked of bands of several rows makes them one row each."""
    asked = []
    original = cpu_conv.band_columns

    def recording(x, width, win, rows, piece=None):
        asked.append((rows, piece))
        return original(x, width, win, rows, piece)

    monkeypatch.setattr(cpu_conv, "band_columns", recording)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((32, 8, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 8, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    valid = Window(5, 5, 1, 1, 0, 0, 1, 1)
    y, _ = cpu_conv.conv2d_forward(x, w, b, valid)
    assert asked == [(1, 5)]
    bound = gamma(8 * 25 + 1, np.float32) * _exact(np.abs(x), np.abs(w), np.abs(b), valid)
    assert_within(y, _exact(x, w, b, valid), bound, "fast conv2: ")
    assert_array_equal(conv2d_forward_bands(x, w, b, valid, 3, 4), conv2d_forward_bands(x, w, b, valid, 1, 4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_eval_mode_conv_forward_and_backward_equal_training_modes(dtype) -> None:
    """Eval mode runs the bands as training does (the layer keeps its input and makes the
    columns again if a backward asks: saliency maps): the same bits, output and every
    gradient; and a layer whose product runs whole keeps its columns in both."""
    rng = np.random.default_rng(2)
    for layer, x_shape in [(dc.Conv2D(6, 16, 5, padding=1), (9, 6, 12, 12)), (dc.Conv2D(1, 32, 5, padding=2), (64, 1, 28, 28))]:
        layer = layer.astype(dtype)
        x = rng.standard_normal(x_shape).astype(dtype)
        y_train = layer.forward(x)
        gy = rng.standard_normal(y_train.shape).astype(dtype)
        gx_train = layer.backward(gy)
        grads_train = {k: v.copy() for k, v in layer.grads.items()}
        assert layer._cache[1].ndim == (4 if band_rows(layer.params["weight"], True, x_shape, layer.window) else 6)
        layer.eval()
        assert_array_equal(layer.forward(x), y_train)
        assert_array_equal(layer.backward(gy), gx_train)
        for name, g in grads_train.items():
            assert_array_equal(layer.grads[name], g)


def test_an_empty_batch_runs_as_the_whole_product() -> None:
    """No bands for a batch of no images (band_rows would divide by zero); the layer's
    forward gives (0, O, out_h, out_w) in training and in eval mode."""
    same = Window(5, 5, 1, 1, 2, 2, 1, 1)
    assert band_rows(np.zeros((6, 1, 5, 5)), True, (0, 1, 28, 28), same) is None
    layer = dc.Conv2D(1, 6, 5, padding=2)
    for mode in (layer.train, layer.eval):
        mode()
        assert layer.forward(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 6, 28, 28)
