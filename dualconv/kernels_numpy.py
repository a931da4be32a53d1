"""The NumPy reference kernels: im2col, col2im, max-pool and avg-pool.

These are the textbook versions of the operations that have a CUDA twin in
kernels/*.cu. Every one is vectorized over the batch and the pixels; the only
Python loop is over the kh*kw kernel offsets. The CUDA kernels are held to
these functions bit for bit, so the order of every sum here is part of the
contract: offsets are visited ky outer, kx inner, and each pixel starts from 0.

Shape names (as in Chainer): N batch, C channels, H, W input size, kh, kw
kernel size, sy, sx stride, ph, pw padding, dy, dx dilation, out_h, out_w
output size.

The column layout is ``col[c, ky, kx, n, oy, ox]``: reshaped to
(C*kh*kw, N*out_h*out_w) it is the matrix that a convolution multiplies by its
(out_channels, C*kh*kw) weight, and each of the kh*kw slice copies below is a
block of whole output rows.
"""
from __future__ import annotations

import numpy as np

from .shapes import get_conv_outsize


def _padded(x: np.ndarray, ph: int, pw: int, fill: float = 0.0) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, H + 2ph, W + 2pw) with ``fill`` around it."""
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    out = np.full((N, C, H + 2 * ph, W + 2 * pw), fill, dtype=x.dtype)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _window(xp_: np.ndarray, ky: int, kx: int, out_h: int, out_w: int,
            sy: int, sx: int, dy: int, dx: int) -> np.ndarray:
    """The strided view of a padded input seen by kernel offset (ky, kx).

    xp_: (N, C, Hp, Wp) -> (N, C, out_h, out_w); element [n, c, oy, ox] is
    xp_[n, c, oy*sy + ky*dy, ox*sx + kx*dx].
    """
    y0, x0 = ky * dy, kx * dx
    return xp_[:, :, y0:y0 + sy * (out_h - 1) + 1:sy, x0:x0 + sx * (out_w - 1) + 1:sx]


def im2col(x: np.ndarray, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
           dy: int = 1, dx: int = 1) -> np.ndarray:
    """Unfold every receptive field of x into a column.

    x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w) with
    col[c, ky, kx, n, oy, ox] = x[n, c, oy*sy - ph + ky*dy, ox*sx - pw + kx*dx]
    (zero where that falls in the padding).
    """
    N, C, H, W = x.shape
    out_h = get_conv_outsize(H, kh, sy, ph, dy)
    out_w = get_conv_outsize(W, kw, sx, pw, dx)
    xp_ = _padded(x, ph, pw)
    col = np.empty((C, kh, kw, N, out_h, out_w), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = _window(xp_, ky, kx, out_h, out_w, sy, sx, dy, dx)
            col[:, ky, kx] = window.transpose(1, 0, 2, 3)
    return col


def col2im(col: np.ndarray, H: int, W: int, sy: int, sx: int, ph: int, pw: int,
           dy: int = 1, dx: int = 1) -> np.ndarray:
    """Fold columns back into an image, summing where receptive fields overlap.

    col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W). The adjoint of im2col:
    x[n, c, y, x] is the sum, over (ky outer, kx inner), of every column entry
    that im2col read from that pixel. Entries that fell in the padding vanish.
    """
    C, kh, kw, N, out_h, out_w = col.shape
    xp_ = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = _window(xp_, ky, kx, out_h, out_w, sy, sx, dy, dx)
            window += col[:, ky, kx].transpose(1, 0, 2, 3)
    return np.ascontiguousarray(xp_[:, :, ph:ph + H, pw:pw + W])


def max_pool_forward(x: np.ndarray, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                     dy: int = 1, dx: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Window maxima and where they were.

    x: (N, C, H, W) -> (y, argmax), both (N, C, out_h, out_w); argmax is the
    window-local index ky*kw + kx as int32. Padding is -inf, so it never wins.
    Ties go to the first maximum in row-major window order; NaN propagates
    (a NaN replaces a number, a later number never replaces a NaN).
    """
    N, C, H, W = x.shape
    out_h = get_conv_outsize(H, kh, sy, ph, dy)
    out_w = get_conv_outsize(W, kw, sx, pw, dx)
    xp_ = _padded(x, ph, pw, fill=-np.inf)
    has_nan = bool(np.isnan(x).any())  # one pass here saves two per offset below
    y = _window(xp_, 0, 0, out_h, out_w, sy, sx, dy, dx)
    argmax = np.zeros(y.shape, dtype=np.int32)
    for ky in range(kh):
        for kx in range(kw):
            if ky == 0 and kx == 0:
                continue
            v = _window(xp_, ky, kx, out_h, out_w, sy, sx, dy, dx)
            take = v > y
            if has_nan:
                take |= np.isnan(v) & ~np.isnan(y)
            y = np.where(take, v, y)
            argmax = np.where(take, np.int32(ky * kw + kx), argmax)
    y = np.ascontiguousarray(y)
    return y, argmax


def max_pool_backward(dy_out: np.ndarray, argmax: np.ndarray, H: int, W: int,
                      kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                      dy: int = 1, dx: int = 1) -> np.ndarray:
    """Route each output gradient back to the pixel that won its window.

    dy_out, argmax: (N, C, out_h, out_w) -> dx: (N, C, H, W). Where windows
    overlap, a pixel sums the gradients of every window it won, in (ky outer,
    kx inner) order.
    """
    N, C, out_h, out_w = dy_out.shape
    xp_ = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy_out.dtype)
    zero = np.zeros((), dtype=dy_out.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = _window(xp_, ky, kx, out_h, out_w, sy, sx, dy, dx)
            window += np.where(argmax == ky * kw + kx, dy_out, zero)
    return np.ascontiguousarray(xp_[:, :, ph:ph + H, pw:pw + W])


def avg_pool_forward(x: np.ndarray, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                     dy: int = 1, dx: int = 1) -> np.ndarray:
    """Window means, padding counted as zeros (PyTorch's default).

    x: (N, C, H, W) -> y: (N, C, out_h, out_w); the window sum is taken in
    (ky outer, kx inner) order, then divided by kh*kw.
    """
    N, C, H, W = x.shape
    out_h = get_conv_outsize(H, kh, sy, ph, dy)
    out_w = get_conv_outsize(W, kw, sx, pw, dx)
    xp_ = _padded(x, ph, pw)
    y = _window(xp_, 0, 0, out_h, out_w, sy, sx, dy, dx).copy()
    for ky in range(kh):
        for kx in range(kw):
            if ky == 0 and kx == 0:
                continue
            y += _window(xp_, ky, kx, out_h, out_w, sy, sx, dy, dx)
    y /= y.dtype.type(kh * kw)
    return y


def avg_pool_backward(dy_out: np.ndarray, H: int, W: int, kh: int, kw: int,
                      sy: int, sx: int, ph: int, pw: int,
                      dy: int = 1, dx: int = 1) -> np.ndarray:
    """Spread each output gradient evenly over its window.

    dy_out: (N, C, out_h, out_w) -> dx: (N, C, H, W); each output gradient is
    divided by kh*kw first, then summed into its pixels in (ky outer, kx inner)
    order.
    """
    N, C, out_h, out_w = dy_out.shape
    g = dy_out / dy_out.dtype.type(kh * kw)
    xp_ = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy_out.dtype)
    for ky in range(kh):
        for kx in range(kw):
            _window(xp_, ky, kx, out_h, out_w, sy, sx, dy, dx)[...] += g
    return np.ascontiguousarray(xp_[:, :, ph:ph + H, pw:pw + W])
