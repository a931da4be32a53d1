"""The CPU twins of the window kernels: im2col, col2im, max-pool and avg-pool, with NumPy.

Each function here computes exactly what its namesake in reference.py
computes (the loop version, written straight from the index formula), and
the tests hold them to it bit for bit (tests/test_kernels_cpu.py). The
fast version differs only in how it walks the data: instead of one Python
loop per index it loops over the kh*kw kernel offsets alone, and for each
offset moves a whole strided slice of the batch at once (``_window``; im2col,
which only copies, moves every offset's slice in one copy of a strided view). The
order of every sum is the reference's, which is part of the contract the
CUDA twins (kernels/*.cu, cuda.py) are held to as well: offsets are visited
ky outer, kx inner, and each pixel starts from 0.

Inputs are checked once, by the dispatch point (``dualconv.kernels``); these
functions trust their arguments. Names as in the table of
``dualconv.kernels``; ``win`` is a ``Window`` (shapes.py).

The other CPU twins live beside this file: the fused updates, loss and
Dropout's masks in cpu_fused.py (imported here too, so this module still
answers for every kernel it held), the convolution's and Dense's GEMMs in
cpu_conv.py and cpu_dense.py.

Indexing. Images are indexed (N, C, H, W) as in the public API, and columns
``col[c, ky, kx, n, oy, ox]``: reshaped (C*kh*kw, N*out_h*out_w), the matrix
a convolution multiplies by its (out_channels, C*kh*kw) weight.

Memory order. Inside, every image is stored batch-last, (C, H, W, N), and
every column block (C, kh, kw, out_h, out_w, N); the functions return views
indexed as above (layout.py). With the batch innermost, the slice copy or add
for one kernel offset moves runs of out_w*N (stride 1) or N (stride > 1) contiguous
numbers instead of out_w-long rows, which is what makes these loops fast. A
convolution's GEMM over batch-last columns writes its output batch-last, so
activations stay that way from layer to layer; an input in any other memory
order is copied into batch-last order once, on entry.
"""
from __future__ import annotations

import numpy as np

from ..shapes import Window
from . import native_max_pool
from .layout import batch_first, batch_last, columns_batch_first, columns_batch_last


def padded_batch_last(x: np.ndarray, ph: int, pw: int, fill: float = 0.0) -> np.ndarray:
    """x: (N, C, H, W) -> a C-contiguous (C, H + 2ph, W + 2pw, N) copy with ``fill`` around it.

    No copy is made when x is already stored batch-last and needs no padding.
    """
    xb = batch_last(x)
    if ph == 0 and pw == 0:
        return np.ascontiguousarray(xb)
    C, H, W, N = xb.shape
    out = np.full((C, H + 2 * ph, W + 2 * pw, N), fill, dtype=x.dtype)
    out[:, ph:ph + H, pw:pw + W] = xb
    return out


def unpadded_batch_first(xb: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """The inverse of padded_batch_last: (C, Hp, Wp, N) -> (N, C, Hp - 2ph, Wp - 2pw),
    a view of xb, or of a cropped copy when there was padding."""
    if ph or pw:
        xb = xb[:, ph:xb.shape[1] - ph, pw:xb.shape[2] - pw].copy()
    return batch_first(xb)


def _window(xb: np.ndarray, ky: int, kx: int, out_h: int, out_w: int, win: Window) -> np.ndarray:
    """The strided view of a padded batch-last input seen by kernel offset (ky, kx).

    xb: (C, Hp, Wp, N) -> (C, out_h, out_w, N); element [c, oy, ox, n] is
    xb[c, oy*sy + ky*dy, ox*sx + kx*dx, n].
    """
    sy, sx = win.sy, win.sx
    y0, x0 = ky * win.dy, kx * win.dx
    return xb[:, y0:y0 + sy * (out_h - 1) + 1:sy, x0:x0 + sx * (out_w - 1) + 1:sx]


def im2col(x: np.ndarray, win: Window) -> np.ndarray:
    """Unfold every receptive field of x into a column.

    x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w) with
    col[c, ky, kx, n, oy, ox] = x[n, c, oy*sy - ph + ky*dy, ox*sx - pw + kx*dx]
    (zero where that falls in the padding). Stored (C, kh, kw, out_h, out_w, N).
    """
    return columns_batch_first(np.ascontiguousarray(all_windows(x, win)))


def all_windows(x: np.ndarray, win: Window) -> np.ndarray:
    """x: (N, C, H, W) -> a read-only view (C, kh, kw, out_h, out_w, N) of its padded
    batch-last copy: every window of every kernel offset at once,
    [c, ky, kx, oy, ox, n] = xb[c, oy*sy + ky*dy, ox*sx + kx*dx, n], the _window of each
    (ky, kx) side by side. One copy then fills the columns: the same numbers as a loop
    of kh*kw slice copies, in one NumPy call instead of kh*kw. (The CPU convolution,
    cpu_conv.py, copies its columns from this view, whole or a band of output rows at a time.)"""
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    xb = padded_batch_last(x, win.ph, win.pw)
    c, row, column, n = xb.strides
    return np.lib.stride_tricks.as_strided(
        xb, shape=(C, win.kh, win.kw, out_h, out_w, N),
        strides=(c, row * win.dy, column * win.dx, row * win.sy, column * win.sx, n), writeable=False)


def col2im(col: np.ndarray, H: int, W: int, win: Window) -> np.ndarray:
    """Fold columns back into an image, summing where receptive fields overlap.

    col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W). The adjoint of im2col:
    x[n, c, y, x] is the sum, over (ky outer, kx inner), of every column entry
    that im2col read from that pixel. Entries that fell in the padding vanish.
    """
    C, kh, kw, N, out_h, out_w = col.shape
    ph, pw = win.ph, win.pw
    col_b = columns_batch_last(col)  # (C, kh, kw, out_h, out_w, N)
    xb = np.zeros((C, H + 2 * ph, W + 2 * pw, N), dtype=col.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = _window(xb, ky, kx, out_h, out_w, win)
            window += col_b[:, ky, kx]
    return unpadded_batch_first(xb, ph, pw)


def max_pool_forward(x: np.ndarray, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """Window maxima and where they were.

    x: (N, C, H, W) -> (y, argmax), both (N, C, out_h, out_w); argmax is the
    window-local index ky*kw + kx as int32. Padding is -inf, so it never wins.
    Ties go to the first maximum in row-major window order; NaN propagates
    (a NaN replaces a number, a later number never replaces a NaN).
    """
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    xb = padded_batch_last(x, win.ph, win.pw, fill=-np.inf)
    compiled = native_max_pool.forward(xb, win)
    if compiled is not None:
        return batch_first(compiled[0]), batch_first(compiled[1])
    y, argmax = _max_pool_scan(xb, out_h, out_w, win, nan_aware=False)
    # np.maximum propagates NaN, so a window holding a NaN has a NaN maximum: checking
    # the (kh*kw times smaller) output finds every window the fast scan got wrong.
    if np.isnan(y).any():
        y, argmax = _max_pool_scan(xb, out_h, out_w, win, nan_aware=True)
    return batch_first(y), batch_first(argmax)


def max_pool_values(x: np.ndarray, win: Window) -> np.ndarray:
    """The window maxima alone: max_pool_forward's y, the same bits, without finding
    where they were (for inference, where no backward will ask).

    x: (N, C, H, W) -> y: (N, C, out_h, out_w). np.maximum propagates NaN, so a
    window holding a NaN has a NaN maximum, as max_pool_forward's.
    """
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    xb = padded_batch_last(x, win.ph, win.pw, fill=-np.inf)
    return batch_first(_window_maxima(xb, out_h, out_w, win))


def _window_maxima(xb: np.ndarray, out_h: int, out_w: int, win: Window) -> np.ndarray:
    """xb: (C, Hp, Wp, N) padded batch-last -> each window's maximum, (C, out_h, out_w, N).

    Taken from the last offset back to the first: np.maximum returns its second
    argument on ties, so of equal values (-0.0 and +0.0 included) the one at the
    first offset in row-major window order is the one kept.
    """
    offsets = [(ky, kx) for ky in range(win.kh) for kx in range(win.kw)]
    y = _window(xb, *offsets[-1], out_h, out_w, win).copy()
    for ky, kx in reversed(offsets[:-1]):
        np.maximum(y, _window(xb, ky, kx, out_h, out_w, win), out=y)
    return y


def _max_pool_scan(xb: np.ndarray, out_h: int, out_w: int, win: Window,
                   nan_aware: bool) -> tuple[np.ndarray, np.ndarray]:
    """The window maxima and their offsets over a padded batch-last input.

    xb: (C, Hp, Wp, N) -> (y, argmax), both (C, out_h, out_w, N). Without
    ``nan_aware`` it is branch-free and right for every window without a NaN.
    """
    if nan_aware:
        return _max_pool_scan_nan_aware(xb, out_h, out_w, win)
    kh, kw = win.kh, win.kw
    offsets = [(ky, kx) for ky in range(kh) for kx in range(kw)]
    y = _window_maxima(xb, out_h, out_w, win)
    # Where it was: the first offset k whose value equals the maximum. Giving offset
    # k the weight K - k, the largest weight among the equal ones is the first's, so
    # argmax = K - max_k(weight_k * equal_k). The weights fit int8 up to 127 offsets
    # (a quarter of int32's memory traffic); larger windows count in int32.
    K = kh * kw
    small = np.int8 if K <= 127 else np.int32
    equal = np.empty(y.shape, dtype=bool)
    weighted = np.empty(y.shape, dtype=small)
    first = np.ones(y.shape, dtype=small)  # the last offset, weight 1, if no earlier one equals
    for k, (ky, kx) in enumerate(offsets[:-1]):
        np.equal(_window(xb, ky, kx, out_h, out_w, win), y, out=equal)
        np.multiply(equal, small(K - k), out=weighted)
        np.maximum(first, weighted, out=first)
    return y, np.subtract(K, first, dtype=np.int32)


def _max_pool_scan_nan_aware(xb: np.ndarray, out_h: int, out_w: int,
                             win: Window) -> tuple[np.ndarray, np.ndarray]:
    """_max_pool_scan for windows holding NaN: a running maximum over the offsets in
    row-major order, where a NaN replaces a number and nothing replaces a NaN."""
    kh, kw = win.kh, win.kw
    y = _window(xb, 0, 0, out_h, out_w, win).copy()
    argmax = np.zeros(y.shape, dtype=np.int32)
    for ky in range(kh):
        for kx in range(kw):
            if ky == 0 and kx == 0:
                continue
            v = _window(xb, ky, kx, out_h, out_w, win)
            take = (v > y) | (np.isnan(v) & ~np.isnan(y))
            y = np.where(take, v, y)
            argmax = np.where(take, np.int32(ky * kw + kx), argmax)
    return y, argmax


def max_pool_backward(gy: np.ndarray, argmax: np.ndarray, H: int, W: int, win: Window) -> np.ndarray:
    """Route each output gradient back to the pixel that won its window.

    gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W). Where windows
    overlap, a pixel sums the gradients of every window it won, in (ky outer,
    kx inner) order.
    """
    N, C, out_h, out_w = gy.shape
    kh, kw, ph, pw = win.kh, win.kw, win.ph, win.pw
    if native_max_pool.tiles(win):
        return _max_pool_backward_tiled(gy, argmax, H, W, win)
    g = np.ascontiguousarray(batch_last(gy))
    winner = np.ascontiguousarray(batch_last(argmax))
    # Multiplying by the 0/1 "won" mask is branch-free, but inf * 0 is NaN, so
    # gradients holding an inf or NaN take the exact (slower) np.where route.
    finite = bool(np.isfinite(g).all())
    won = np.empty(g.shape, dtype=bool)
    routed = np.empty(g.shape, dtype=g.dtype)
    zero = np.zeros((), dtype=g.dtype)
    xb = np.zeros((C, H + 2 * ph, W + 2 * pw, N), dtype=g.dtype)
    for ky in range(kh):
        for kx in range(kw):
            np.equal(winner, ky * kw + kx, out=won)
            if finite:
                np.multiply(g, won, out=routed)
            else:
                routed = np.where(won, g, zero)
            window = _window(xb, ky, kx, out_h, out_w, win)
            window += routed
    return unpadded_batch_first(xb, ph, pw)


def _max_pool_backward_tiled(gy: np.ndarray, argmax: np.ndarray, H: int, W: int,
                             win: Window) -> np.ndarray:
    """max_pool_backward for windows that tile the image (stride = kernel, no
    padding, no dilation), such as LeNet's 2x2 pooling: one write per pixel.

    gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W). Each pixel lies in
    at most one window, so its gradient is a single term, and gx can be
    written straight into place instead of summed into a zeroed image: seen
    as (C, out_h, kh, out_w, kw, N), offset (ky, kx) of every window is one
    strided slice of gx, and it receives gy where argmax == ky*kw + kx and 0
    elsewhere. Rows and columns past the last whole window get 0.

    Bit for bit the general path: that one adds each routed term to 0, so a
    pixel gets 0 + gy (which turns -0.0 into +0.0 and keeps inf and NaN) or
    +0.0. Here gy + 0 is taken once per window, and the routing multiplies
    its bit pattern, read as an integer, by the 0/1 "won" mask: the integer
    product is that bit pattern or 0, which is +0.0, with no float multiply
    to turn inf * 0 into NaN.
    """
    compiled = native_max_pool.backward(batch_last(gy), batch_last(argmax), H, W, win)
    if compiled is not None:
        return batch_first(compiled)
    N, C, out_h, out_w = gy.shape
    kh, kw = win.kh, win.kw
    bits = np.dtype(f"int{8 * gy.dtype.itemsize}")
    g = np.add(batch_last(gy), gy.dtype.type(0), order="C").view(bits)  # (C, out_h, out_w, N)
    winner = np.ascontiguousarray(batch_last(argmax))
    whole = H == out_h * kh and W == out_w * kw
    gxb = (np.empty if whole else np.zeros)((C, H, W, N), dtype=gy.dtype)
    tiles = gxb.view(bits)[:, :out_h * kh, :out_w * kw].reshape(C, out_h, kh, out_w, kw, N)
    offset = np.arange(kh * kw, dtype=np.int32).reshape(kh, kw, 1, 1, 1, 1)
    won = np.equal(winner, offset)  # (kh, kw, C, out_h, out_w, N): every offset at once
    np.multiply(g, won, out=tiles.transpose(2, 4, 0, 1, 3, 5))
    return batch_first(gxb)


def avg_pool_forward(x: np.ndarray, win: Window) -> np.ndarray:
    """Window means, padding counted as zeros (PyTorch's default).

    x: (N, C, H, W) -> y: (N, C, out_h, out_w); the window sum is taken in
    (ky outer, kx inner) order, then divided by kh*kw.
    """
    N, C, H, W = x.shape
    kh, kw, ph, pw = win.kh, win.kw, win.ph, win.pw
    out_h, out_w = win.out_size(H, W)
    xb = padded_batch_last(x, ph, pw)
    y = _window(xb, 0, 0, out_h, out_w, win).copy()
    for ky in range(kh):
        for kx in range(kw):
            if ky == 0 and kx == 0:
                continue
            y += _window(xb, ky, kx, out_h, out_w, win)
    y /= y.dtype.type(kh * kw)
    return batch_first(y)


def avg_pool_backward(gy: np.ndarray, H: int, W: int, win: Window) -> np.ndarray:
    """Spread each output gradient evenly over its window.

    gy: (N, C, out_h, out_w) -> gx: (N, C, H, W); each output gradient is
    divided by kh*kw first, then summed into its pixels in (ky outer, kx inner)
    order.
    """
    N, C, out_h, out_w = gy.shape
    kh, kw, ph, pw = win.kh, win.kw, win.ph, win.pw
    g = np.divide(batch_last(gy), gy.dtype.type(kh * kw), order="C")
    xb = np.zeros((C, H + 2 * ph, W + 2 * pw, N), dtype=gy.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = _window(xb, ky, kx, out_h, out_w, win)
            window += g
    return unpadded_batch_first(xb, ph, pw)
