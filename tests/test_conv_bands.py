"""Conv2D on the CPU: its columns with a row of ones (the bias as one more product
term), and its inference forward in bands of output rows (conv2d_forward_bands):
within the dot products' rounding bound of the exact convolution, as the forward that
keeps its columns is, for any window, band size and input memory order (BLAS may sum
a band's dot products in another order than the whole product's: measured, the two
differ in a few last bits); and an eval-mode backward that equals training mode's."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv import kernels
from dualconv.kernels import cpu
from dualconv.shapes import Window
from dualconv.layers.conv import band_rows, conv2d_forward, conv2d_forward_bands
from error_bounds import assert_within, gamma
from window_configs import random_configs


@pytest.mark.parametrize("rows", [1, 2, 3, 1000])
@pytest.mark.parametrize("cfg", random_configs(seed=11, count=12), ids=str)
def test_bands_give_the_same_outputs_as_the_whole_forward(cfg, rows: int) -> None:
    """Bands of one row, of a few rows with a shorter last band, and one band for all."""
    rng = np.random.default_rng(5)
    O = 3
    x = rng.standard_normal((cfg.N, cfg.C, cfg.H, cfg.W)).astype(np.float32)
    w = rng.standard_normal((O, cfg.C, cfg.kh, cfg.kw)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    f64 = [a.astype(np.float64) for a in (x, w, b)]
    exact = conv2d_forward(*f64, cfg.window)[0]
    bound = gamma(cfg.C * cfg.kh * cfg.kw + 1, np.float32) * conv2d_forward(*map(np.abs, f64), cfg.window)[0]
    whole = conv2d_forward(x, w, b, cfg.window)[0]
    got = conv2d_forward_bands(x, w, b, cfg.window, rows)
    assert got.shape == whole.shape and got.dtype == whole.dtype == np.float32
    assert_within(whole, exact, bound, "whole: ")
    assert_within(got, exact, bound, "bands: ")
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)  # as activations are stored
    assert_array_equal(conv2d_forward_bands(batch_last, w, b, cfg.window, rows), got)
    without_bias = conv2d_forward_bands(x, w, None, cfg.window, rows)
    assert_within(without_bias, conv2d_forward(*f64[:2], None, cfg.window)[0], bound, "no bias: ")


@pytest.mark.parametrize("cfg", random_configs(seed=12, count=12), ids=str)
def test_im2col_with_ones_is_im2col_and_a_row_of_ones(cfg) -> None:
    """The columns the CPU convolution multiplies by [w | b]: im2col's (checked against
    the reference loops elsewhere), as a matrix in its storage order, then ones."""
    x = np.random.default_rng(3).standard_normal((cfg.N, cfg.C, cfg.H, cfg.W))
    matrix = cpu.im2col_with_ones(x, cfg.window)
    col = kernels.im2col(x, cfg.window)  # (C, kh, kw, N, out_h, out_w)
    expected = np.moveaxis(col, 3, -1).reshape(cfg.C * cfg.kh * cfg.kw, -1)
    assert matrix.shape == (expected.shape[0] + 1, expected.shape[1]) and matrix.dtype == x.dtype
    assert_array_equal(matrix[:-1], expected)
    assert_array_equal(matrix[-1], np.ones(expected.shape[1]))


def test_bands_are_sized_for_the_small_matrix_kernels() -> None:
    """A band holds the most output rows whose product stays within BLOCK_MULTIPLY_ADDS
    (one at least); a row over it runs in bands only where the columns outweigh the
    outputs twice over. Worked by hand for 28x28 and 14x14 inputs, 5x5 kernels."""
    same, valid = Window(5, 5, 1, 1, 2, 2, 1, 1), Window(5, 5, 1, 1, 0, 0, 1, 1)
    # LeNet's conv1 at 64 images: a row is 6 * 26 * 28 * 64 = 279,552 multiply-adds: 3 rows
    assert band_rows(np.zeros((6, 1, 5, 5)), True, (64, 1, 28, 28), same) == 3
    assert band_rows(np.zeros((6, 1, 5, 5)), False, (64, 1, 28, 28), same) == 3  # 268,800 a row
    # conv2 at 64: a row is 16 * 151 * 10 * 64 = 1,546,240, but 150 column numbers to 16 outputs
    assert band_rows(np.zeros((16, 6, 5, 5)), True, (64, 6, 14, 14), valid) == 1
    # weidman's conv: at 32 a row is 32 * 26 * 28 * 32 = 745,472; at 64 twice that, and
    # 25 column numbers against 32 outputs: whole
    assert band_rows(np.zeros((32, 1, 5, 5)), True, (32, 1, 28, 28), same) == 1
    assert band_rows(np.zeros((32, 1, 5, 5)), True, (64, 1, 28, 28), same) is None
    assert band_rows(np.zeros((32, 1, 5, 5)), True, (8, 1, 28, 28), same) == 5  # 186,368 a row


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_eval_mode_conv_forward_and_backward_equal_training_modes(dtype) -> None:
    """In eval mode the layer keeps its input instead of its columns and makes them again
    if a backward asks (saliency maps): the output within the rounding bound of training
    mode's, and every gradient the same bits."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 6, 12, 12)).astype(dtype)
    layer = dc.Conv2D(6, 16, 5, padding=1).astype(dtype)
    gy = rng.standard_normal((9, 16, 10, 10)).astype(dtype)
    y_train = layer.forward(x)
    gx_train = layer.backward(gy)
    grads_train = {k: v.copy() for k, v in layer.grads.items()}
    layer.eval()
    w = np.abs(layer.params["weight"]).astype(np.float64)
    bound = 2 * gamma(6 * 25 + 1, dtype) * conv2d_forward(np.abs(x).astype(np.float64), w,
                                                          np.abs(layer.params["bias"]), layer.window)[0]
    assert_within(layer.forward(x), y_train, bound)
    assert_array_equal(layer.backward(gy), gx_train)
    for name, g in grads_train.items():
        assert_array_equal(layer.grads[name], g)
