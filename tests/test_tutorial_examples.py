"""Hand-worked examples of a from-scratch convolution tutorial (cross-correlation,
padding, stride, channels, pooling), checked against the CPU kernels (dualconv/kernels/cpu.py).

The inputs and outputs are a tutorial's printed examples, small enough to check
by hand; where a result was only shown as a picture, the expected numbers were
worked out by hand from the inputs and the working is in the test. Convolutions go through
im2col + a matmul, the way Conv2D computes them; the direct loop convolution (dualconv/kernels/reference.py)
is held to the same numbers.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dualconv.kernels import cpu, reference
from dualconv.shapes import Window, get_conv_outsize


def conv_im2col(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """x: (N, C, H, W), w: (O, C, kh, kw) -> (N, O, out_h, out_w) via im2col + matmul."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    col = cpu.im2col(x, Window(kh, kw, stride, stride, padding, padding))
    out_h, out_w = col.shape[-2:]
    y = w.reshape(O, -1) @ col.reshape(C * kh * kw, -1)
    return y.reshape(O, N, out_h, out_w).transpose(1, 0, 2, 3)


CONVS = [
    pytest.param(conv_im2col, id="im2col"),
    pytest.param(lambda x, w, stride=1, padding=0: reference.conv2d(x, w, None, stride, padding),
                 id="reference"),
]


@pytest.mark.parametrize("conv", CONVS)
def test_cross_correlation_2x2_kernel_on_3x3_image(conv) -> None:
    """img = arange(9) as 3x3, kernel = arange(4) as 2x2; the tutorial works out the
    top-left output as 0*0 + 1*1 + 3*2 + 4*3 = 19. The other three by hand:
    1*0+2*1+4*2+5*3 = 25, 3*0+4*1+6*2+7*3 = 37, 4*0+5*1+7*2+8*3 = 43."""
    img = np.arange(9.).reshape(1, 1, 3, 3)
    kernel = np.arange(4.).reshape(1, 1, 2, 2)
    out = conv(img, kernel)
    assert out[0, 0, 0, 0] == 0 * 0 + 1 * 1 + 3 * 2 + 4 * 3 == 19
    assert_array_equal(out, [[[[19., 25.], [37., 43.]]]])


@pytest.mark.parametrize("conv", CONVS)
def test_edge_detection_kernel(conv) -> None:
    """img: 6x8 zeros with columns 2:6 set to 1, kernel [[1, -1]] -> 6x7; each
    output is img[:, j] - img[:, j+1]: -1 where 0 -> 1 (j = 1), +1 where
    1 -> 0 (j = 5), 0 elsewhere."""
    img = np.zeros((1, 1, 6, 8))
    img[:, :, :, 2:6] = 1.0
    kernel = np.array([[[[1.0, -1.0]]]])
    out = conv(img, kernel)
    assert out.shape == (1, 1, 6, 7)
    assert_array_equal(out, np.tile([0., -1., 0., 0., 0., 1., 0.], (1, 1, 6, 1)))


def test_padding_and_1d_convolution() -> None:
    """A 1-D warm-up: [1, 2, 3, 4, 5] padded by one is
    [0, 1, 2, 3, 4, 5, 0], and cross-correlated with [1, 1, 1] it gives
    [3, 6, 9, 12, 9] (0+1+2, 1+2+3, ...), whose sum is 39."""
    x = np.array([1., 2., 3., 4., 5.]).reshape(1, 1, 1, 5)
    assert_array_equal(cpu.im2col(x, Window(1, 1, 1, 1, 0, 1)).ravel(), [0, 1, 2, 3, 4, 5, 0])
    col = cpu.im2col(x, Window(1, 3, 1, 1, 0, 1))
    out = np.ones((1, 3)) @ col.reshape(3, -1)
    assert_array_equal(out.ravel(), [3., 6., 9., 12., 9.])
    assert out.sum() == 39.0


def test_padded_image_example() -> None:
    """arange(1, 10) as 3x3, padded by 1 (what F.pad(img, (1, 1, 1, 1)) gives)."""
    img = np.arange(1., 10.).reshape(1, 1, 3, 3)
    col = cpu.im2col(img, Window(1, 1, 1, 1, 1, 1))
    assert_array_equal(col.reshape(5, 5), [[0, 0, 0, 0, 0],
                                           [0, 1, 2, 3, 0],
                                           [0, 4, 5, 6, 0],
                                           [0, 7, 8, 9, 0],
                                           [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("conv", CONVS)
def test_padding_and_stride_with_ones_kernel(conv) -> None:
    """img = arange(1, 10) as 3x3, kernel = ones 2x2. Each output is the sum of a
    2x2 block of the padded image above. Padding 1 -> 4x4 (by hand):
        0+0+0+1 = 1,  0+0+1+2 = 3,  0+0+2+3 = 5,  0+0+3+0 = 3
        0+1+0+4 = 5,  1+2+4+5 = 12, 2+3+5+6 = 16, 3+0+6+0 = 9
        0+4+0+7 = 11, 4+5+7+8 = 24, 5+6+8+9 = 28, 6+0+9+0 = 15
        0+7+0+0 = 7,  7+8+0+0 = 15, 8+9+0+0 = 17, 9+0+0+0 = 9
    Padding 1, stride 2 (the tutorial's exercise) keeps rows and columns 0 and 2."""
    img = np.arange(1., 10.).reshape(1, 1, 3, 3)
    kernel = np.ones((1, 1, 2, 2))
    padded = conv(img, kernel, padding=1)
    assert_array_equal(padded, [[[[1., 3., 5., 3.],
                                  [5., 12., 16., 9.],
                                  [11., 24., 28., 15.],
                                  [7., 15., 17., 9.]]]])
    strided = conv(img, kernel, stride=2, padding=1)
    assert_array_equal(strided, [[[[1., 5.], [11., 28.]]]])


@pytest.mark.parametrize("conv", CONVS)
def test_two_input_channels(conv) -> None:
    """img channels arange(9), arange(1, 10); kernels arange(4), arange(1, 5):
    the tutorial prints [[56, 72], [104, 120]] (the per-channel sums added)."""
    img = np.concatenate([np.arange(9.), np.arange(1., 10.)]).reshape(1, 2, 3, 3)
    kernels = np.concatenate([np.arange(4.), np.arange(1., 5.)]).reshape(1, 2, 2, 2)
    assert_array_equal(conv(img, kernels), [[[[56., 72.], [104., 120.]]]])
    per_channel = conv(img[:, 0:1], kernels[:, 0:1]) + conv(img[:, 1:2], kernels[:, 1:2])
    assert_array_equal(per_channel, [[[[56., 72.], [104., 120.]]]])


@pytest.mark.parametrize("conv", CONVS)
def test_three_output_channels(conv) -> None:
    """torch.cat([F.conv2d(img, kernels + i) for i in range(3)]) in the tutorial; here
    the three kernels are stacked as three output channels of one convolution."""
    img = np.concatenate([np.arange(9.), np.arange(1., 10.)]).reshape(1, 2, 3, 3)
    kernels = np.concatenate([np.arange(4.), np.arange(1., 5.)]).reshape(1, 2, 2, 2)
    w = np.concatenate([kernels + i for i in range(3)], axis=0)
    assert_array_equal(conv(img, w), [[[[56., 72.], [104., 120.]],
                                       [[76., 100.], [148., 172.]],
                                       [[96., 128.], [192., 224.]]]])


def test_max_pool_2x2_stride_1() -> None:
    """arange(9) as 3x3, MaxPool2d(2, stride=1): the tutorial prints [[4, 5], [7, 8]]."""
    img = np.arange(9.).reshape(1, 1, 3, 3)
    y, argmax = cpu.max_pool_forward(img, Window(2, 2, 1, 1, 0, 0))
    assert_array_equal(y, [[[[4., 5.], [7., 8.]]]])
    assert_array_equal(argmax, np.full((1, 1, 2, 2), 3))  # bottom-right of each window


def test_avg_pool_2x2_stride_1() -> None:
    """arange(9) as 3x3, AvgPool2d(2, stride=1): the tutorial prints [[2, 3], [5, 6]]."""
    img = np.arange(9.).reshape(1, 1, 3, 3)
    assert_array_equal(cpu.avg_pool_forward(img, Window(2, 2, 1, 1, 0, 0)), [[[[2., 3.], [5., 6.]]]])


def test_max_pool_keeps_channels_apart() -> None:
    """Two channels arange(9), arange(1, 10): the tutorial prints
    [[[4, 5], [7, 8]], [[5, 6], [8, 9]]] (pooled per channel, not summed)."""
    img = np.concatenate([np.arange(9.), np.arange(1., 10.)]).reshape(1, 2, 3, 3)
    y, _ = cpu.max_pool_forward(img, Window(2, 2, 1, 1, 0, 0))
    assert_array_equal(y, [[[[4., 5.], [7., 8.]], [[5., 6.], [8., 9.]]]])


@pytest.mark.parametrize("size, k, s, p, expected", [
    (30, 3, 1, 0, 28),    # (30 - 3 + 0) / 1 + 1
    (224, 5, 2, 1, 111),  # floor((224 - 5 + 2) / 2) + 1
    (528, 7, 3, 2, 176),  # (528 - 7 + 4) / 3 + 1
    (3, 2, 1, 1, 4),      # the padding example above
    (3, 2, 2, 1, 2),      # the stride example above
])
def test_output_size_exercise_table(size: int, k: int, s: int, p: int, expected: int) -> None:
    """The tutorial's output-size exercise, by O = floor((W - F + 2P) / S) + 1,
    checked both by the formula and by the shape im2col produces."""
    assert get_conv_outsize(size, k, s, p) == expected
    x = np.zeros((1, 1, size, 3))
    assert cpu.im2col(x, Window(k, 1, s, 1, p, 0)).shape[-2] == expected
