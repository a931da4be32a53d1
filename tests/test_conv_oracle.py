"""Conv2D's forward against the loop convolution of the textbook (kernels/reference.py: conv2d)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.kernels import blocked, reference
from dualconv.kernels.reference import conv2d as reference_conv2d
from dualconv.shapes import Window
from error_bounds import assert_within, gamma



def conv_error_bound(x, w, b, *geometry) -> np.ndarray:
    """Twice the rounding bound of one convolution output (C*kh*kw products plus the bias).

    Conv2D (im2col + BLAS) and the reference loops each lie within
    gamma(K) * conv(|x|, |w|, |b|) of the exact result, so they differ by at most twice that.
    """
    terms = int(np.prod(w.shape[1:])) + (b is not None)
    magnitude = reference_conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                             None if b is None else np.abs(b).astype(np.float64), *geometry)
    return 2 * gamma(terms, x.dtype) * magnitude


@st.composite
def conv_configs(draw):
    """A Conv2D configuration and an input it accepts (output at least 1x1)."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dy, dx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    span_h, span_w = dy * (kh - 1) + 1, dx * (kw - 1) + 1
    H = draw(st.integers(max(1, span_h - 2 * ph), max(1, span_h - 2 * ph) + 5))
    W = draw(st.integers(max(1, span_w - 2 * pw), max(1, span_w - 2 * pw) + 5))
    return dict(
        N=draw(st.integers(1, 2)), C=draw(st.integers(1, 3)), O=draw(st.integers(1, 3)),
        H=H, W=W, kernel=(kh, kw), stride=(sy, sx), padding=(ph, pw), dilation=(dy, dx),
        bias=draw(st.booleans()), dtype=draw(st.sampled_from([np.float32, np.float64])),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(conv_configs())
def test_conv2d_forward_matches_reference(cfg: dict) -> None:
    rng = np.random.default_rng(cfg["seed"])
    dtype = cfg["dtype"]
    layer = dc.Conv2D(cfg["C"], cfg["O"], cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"],
                      dilation=cfg["dilation"], bias=cfg["bias"]).astype(dtype)
    if cfg["bias"]:
        layer.params["bias"][...] = rng.standard_normal(cfg["O"])
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    y = layer.forward(x)
    expected = reference_conv2d(x, layer.params["weight"], layer.params.get("bias"),
                            cfg["stride"], cfg["padding"], cfg["dilation"])
    assert y.dtype == dtype
    assert y.shape == expected.shape
    bound = conv_error_bound(x, layer.params["weight"], layer.params.get("bias"),
                             cfg["stride"], cfg["padding"], cfg["dilation"])
    assert_within(y, expected, bound)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(kh=st.sampled_from([1, 3, 5]), kw=st.sampled_from([1, 3, 5]), d=st.integers(1, 2),
       H=st.integers(1, 7), W=st.integers(1, 7), seed=st.integers(0, 1000))
def test_same_padding_keeps_height_and_width(kh: int, kw: int, d: int, H: int, W: int, seed: int) -> None:
    span_h, span_w = d * (kh - 1) + 1, d * (kw - 1) + 1
    layer = dc.Conv2D(2, 3, (kh, kw), padding="same", dilation=d).astype(np.float64)
    x = np.random.default_rng(seed).standard_normal((2, 2, H, W))
    y = layer.forward(x)
    assert y.shape == (2, 3, H, W)
    # "same" is the symmetric padding (span - 1) / 2 of the reference convolution
    padding = ((span_h - 1) // 2, (span_w - 1) // 2)
    expected = reference_conv2d(x, layer.params["weight"], layer.params["bias"], 1, padding, d)
    assert_within(y, expected, conv_error_bound(x, layer.params["weight"], layer.params["bias"], 1, padding, d))


def test_hand_computed_example() -> None:
    """x = 1..9 as 3x3, w = [[1, 0], [0, -1]], b = 10: each output is x[i, j] - x[i+1, j+1] + 10 = 6."""
    layer = dc.Conv2D(1, 1, 2).astype(np.float64)
    layer.params["weight"][...] = [[[[1, 0], [0, -1]]]]
    layer.params["bias"][...] = 10
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    assert_array_equal(layer.forward(x), np.full((1, 1, 2, 2), 6.0))  # small integers: exact
    # padding 1, stride 2: windows at rows/cols -1 and 1 of the image
    layer = dc.Conv2D(1, 1, 2, stride=2, padding=1).astype(np.float64)
    layer.params["weight"][...] = [[[[1, 0], [0, -1]]]]
    layer.params["bias"][...] = 0
    # (oy, ox) = (0, 0): 1*pad - x[0,0] = -1;  (0, 1): pad - x[0, 2] = -3
    # (1, 0): pad - x[2, 0] = -7;               (1, 1): x[1,1] - x[2,2] = 5 - 9 = -4
    assert_array_equal(layer.forward(x), [[[[-1.0, -3.0], [-7.0, -4.0]]]])


def test_lazy_in_channels_inferred_at_first_forward() -> None:
    layer = dc.Conv2D(None, 4, (3, 2))
    assert not layer.built and layer.params == {}
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 6)).astype(np.float32)
    y = layer.forward(x)
    assert layer.in_channels == 5
    assert layer.params["weight"].shape == (4, 5, 3, 2)
    assert layer.params["bias"].shape == (4,)
    assert y.shape == (2, 4, 4, 5)
    w, b = layer.params["weight"], layer.params["bias"]
    assert_within(y, reference_conv2d(x, w, b), conv_error_bound(x, w, b))
    with pytest.raises(ValueError, match="Conv2D"):
        layer.forward(np.zeros((2, 3, 6, 6), dtype=np.float32))


def test_weight_shape_is_out_in_kh_kw() -> None:
    layer = dc.Conv2D(3, 7, (2, 5))
    assert layer.params["weight"].shape == (7, 3, 2, 5)
    assert layer.params["bias"].shape == (7,)
    assert layer.num_parameters() == 7 * 3 * 2 * 5 + 7
    assert "bias" not in dc.Conv2D(3, 7, 2, bias=False).params


def test_writing_into_params_changes_the_output() -> None:
    layer = dc.Conv2D(2, 2, 3).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4))
    before = layer.forward(x).copy()
    layer.params["weight"][1] = 0.0  # in place: second filter off
    layer.params["bias"][...] = [0.0, 2.5]
    after = layer.forward(x)
    assert_array_equal(after[:, 1], 2.5)  # zero weights: 0 + 2.5 is exact
    assert_array_equal(after[:, 0], before[:, 0])  # the same sums, in the same order
    # replacing the array entirely is seen too
    layer.params["weight"] = np.ones((2, 2, 3, 3))
    ones = np.ones((2, 2, 3, 3))
    assert_within(layer.forward(x)[:, 0], reference_conv2d(x, ones, np.zeros(2))[:, 0],
                  conv_error_bound(x, ones, np.zeros(2))[:, 0])


@pytest.mark.parametrize("O", [3, 10])
@pytest.mark.parametrize("N, H, W, padding, stride, dilation",
                         [(3, 5, 6, 0, 1, 1), (2, 7, 7, 2, 1, 1), (4, 6, 5, 1, 2, 1), (2, 13, 10, 1, 1, 2)])
def test_conv2d_in_blocks_matches_reference(monkeypatch, N: int, H: int, W: int, padding: int,
                                            stride: int, dilation: int, O: int) -> None:
    """Forward and backward with the GEMMs forced into blocks of at most 7 columns (the
    column count N*out_h*out_w is never a multiple of 7 here), against the
    reference's loops: its convolution, and gw, gx from its im2col and col2im
    in float64. With 3 outputs (18 column numbers outweigh them) the layer runs in
    bands of output rows, its weight gradient made from the input band by band; with
    10, and bands sized to hold no row, it runs whole: the column matrix kept, gw in
    inner blocks."""
    monkeypatch.setenv("DUALCONV_NATIVE", "0")  # the GEMM twin's blocks, not the compiled sums
    monkeypatch.setattr(blocked, "MIN_BLOCK", 1)
    monkeypatch.setattr(blocked, "BLOCK_MULTIPLY_ADDS", 7 * O * 19)  # [w | b] is O x 19
    assert blocked.block_size(O, 19) == blocked.block_size(18, O) == 7
    if O == 10:
        monkeypatch.setattr("dualconv.kernels.cpu_conv.BLOCK_MULTIPLY_ADDS", 1)  # no row fits: no bands
    win = Window(3, 3, stride, stride, padding, padding, dilation, dilation)
    out_h, out_w = win.out_size(H, W)
    rng = np.random.default_rng(N * H)
    layer = dc.Conv2D(2, O, 3, stride=stride, padding=padding, dilation=dilation)
    layer.params["bias"][...] = rng.standard_normal(O)
    x = rng.standard_normal((N, 2, H, W)).astype(np.float32)
    w, b = layer.params["weight"], layer.params["bias"]
    y = layer.forward(x)
    assert layer._cache[1].ndim == (4 if O == 3 else 6)  # the input kept (bands), or the columns
    assert (N * out_h * out_w) % 7
    geometry = (stride, padding, dilation)
    assert_within(y, reference_conv2d(x, w, b, *geometry), conv_error_bound(x, w, b, *geometry))

    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(gy)
    col = reference.im2col(x.astype(np.float64), win).reshape(18, -1)  # (C*kh*kw, N*out_h*out_w)
    g = gy.transpose(1, 0, 2, 3).reshape(O, -1).astype(np.float64)     # (O, N*out_h*out_w)
    gw = (g @ col.T).reshape(w.shape)
    gw_bound = 2 * gamma(col.shape[1], np.float32) * (np.abs(g) @ np.abs(col).T).reshape(w.shape)
    assert_within(layer.grads["weight"], gw, gw_bound, "gw: ")
    assert_within(layer.grads["bias"], g.sum(axis=1), 2 * gamma(g.shape[1], np.float32) * np.abs(g).sum(axis=1))
    w_mat = w.reshape(O, -1).astype(np.float64)
    gcol = (w_mat.T @ g).reshape(2, 3, 3, N, out_h, out_w)
    gcol_abs = (np.abs(w_mat).T @ np.abs(g)).reshape(2, 3, 3, N, out_h, out_w)
    gx_bound = 2 * gamma(O + 9, np.float32) * reference.col2im(gcol_abs, H, W, win)
    assert_within(gx, reference.col2im(gcol, H, W, win), gx_bound, "gx: ")
