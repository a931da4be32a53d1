"""The textbook: every kernel as plain loops, straight from its index formula.

Start here. Each function has the arguments of its fast twins in cpu.py
(NumPy) and cuda.py (CUDA, kernels/*.cu), computes the same numbers, and is
written with one Python loop per index and one scalar operation per
iteration. The tests hold cpu.py to these functions bit for bit, and the
CUDA kernels to cpu.py. Nothing here calls the twins. They are slow on
purpose and meant for inputs of a few hundred pixels.

The GEMM kernels at the end (conv2d_forward and conv2d_backward, dense_forward
and dense_backward; twins in cpu_conv.py, cpu_dense.py, cuda_conv.py,
cuda_dense.py) are the textbook's products, written plainly on top of the loop
im2col and col2im: one matrix product each, then the bias. Every output is
one dot product, whose terms BLAS may add in any order, so the tests hold the
twins to these within the products' rounding bound (tests/error_bounds.py),
not bit for bit.

Forward ops read the input pixel seen by kernel offset (ky, kx) from output
position (oy, ox):

    y = oy*sy - ph + ky*dy,    x = ox*sx - pw + kx*dx

and treat a (y, x) outside [0, H) x [0, W) as padding. Backward ops gather
instead: for each input pixel (y, x) and each offset (ky, kx) they solve the
same formula for (oy, ox), which exists when y + ph - ky*dy is a multiple of
sy in [0, sy*(out_h - 1)] (and likewise for x). The sums run over offsets in
(ky outer, kx inner) order from 0 in the array's dtype, which is the order
the twins promise, so results match them bit for bit.

Names as in the table of ``dualconv.kernels``: N batch, C channels, H, W
input size, and a ``Window`` win = (kh, kw kernel size, sy, sx stride, ph, pw
padding, dy, dx dilation); out_h, out_w output size; gy, gx the gradients
with respect to the output and the input.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..shapes import Window, get_conv_outsize, pair


def _source(o: int, k: int, s: int, p: int, d: int) -> int:
    """The input coordinate read by output o at kernel offset k (may be padding)."""
    return o * s - p + k * d


def _target(i: int, k: int, s: int, p: int, d: int, out: int) -> int | None:
    """The output coordinate whose offset k reads input i, or None if there is none."""
    t = i + p - k * d
    if t < 0 or t % s != 0 or t // s >= out:
        return None
    return t // s


def _readers(y: int, x: int, win: Window, out_h: int, out_w: int):
    """Every (ky, kx, oy, ox), offsets ky outer and kx inner, such that output (oy, ox)
    read input pixel (y, x) through kernel offset (ky, kx): the terms a backward pass
    gathers for that pixel (kernels/common.cuh's dc_for_each_reader on the GPU)."""
    kh, kw, sy, sx, ph, pw, dy, dx = win
    for ky in range(kh):
        for kx in range(kw):
            oy = _target(y, ky, sy, ph, dy, out_h)
            ox = _target(x, kx, sx, pw, dx, out_w)
            if oy is not None and ox is not None:
                yield ky, kx, oy, ox


def im2col(x: np.ndarray, win: Window) -> np.ndarray:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w).

    col[c, ky, kx, n, oy, ox] = x[n, c, oy*sy - ph + ky*dy, ox*sx - pw + kx*dx],
    0 where that pixel is padding.
    """
    kh, kw, sy, sx, ph, pw, dy, dx = win
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    col = np.zeros((C, kh, kw, N, out_h, out_w), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for oy in range(out_h):
                for ox in range(out_w):
                    for ky in range(kh):
                        for kx in range(kw):
                            y = _source(oy, ky, sy, ph, dy)
                            x_ = _source(ox, kx, sx, pw, dx)
                            if 0 <= y < H and 0 <= x_ < W:
                                col[c, ky, kx, n, oy, ox] = x[n, c, y, x_]
    return col


def col2im(col: np.ndarray, H: int, W: int, win: Window) -> np.ndarray:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W).

    x[n, c, y, x] is the sum, over offsets (ky outer, kx inner), of
    col[c, ky, kx, n, oy, ox] for the (oy, ox) whose window read (y, x).
    """
    C, _, _, N, out_h, out_w = col.shape
    img = np.zeros((N, C, H, W), dtype=col.dtype)
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x_ in range(W):
                    total = col.dtype.type(0)
                    for ky, kx, oy, ox in _readers(y, x_, win, out_h, out_w):
                        total += col[c, ky, kx, n, oy, ox]
                    img[n, c, y, x_] = total
    return img


def max_pool_forward(x: np.ndarray, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """x: (N, C, H, W) -> (y, argmax), both (N, C, out_h, out_w), argmax int32.

    argmax is the window-local index ky*kw + kx. Padding reads as -inf. If the
    window holds a NaN, y is NaN and argmax the first NaN in row-major window
    order; otherwise y is the window maximum and argmax its first occurrence.
    """
    kh, kw, sy, sx, ph, pw, dy, dx = win
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    out = np.zeros((N, C, out_h, out_w), dtype=x.dtype)
    argmax = np.zeros((N, C, out_h, out_w), dtype=np.int32)
    for n in range(N):
        for c in range(C):
            for oy in range(out_h):
                for ox in range(out_w):
                    window = []
                    for ky in range(kh):
                        for kx in range(kw):
                            y = _source(oy, ky, sy, ph, dy)
                            x_ = _source(ox, kx, sx, pw, dx)
                            if 0 <= y < H and 0 <= x_ < W:
                                window.append(x[n, c, y, x_])
                            else:
                                window.append(x.dtype.type(-np.inf))
                    nans = [i for i, v in enumerate(window) if np.isnan(v)]
                    if nans:
                        best = nans[0]
                    else:
                        best = window.index(max(window))
                    out[n, c, oy, ox] = window[best]
                    argmax[n, c, oy, ox] = best
    return out, argmax


def max_pool_values(x: np.ndarray, win: Window) -> np.ndarray:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), the window maxima of max_pool_forward."""
    return max_pool_forward(x, win)[0]


def max_pool_backward(gy: np.ndarray, argmax: np.ndarray, H: int, W: int, win: Window) -> np.ndarray:
    """gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W).

    gx[n, c, y, x] sums, over offsets (ky outer, kx inner), gy at every
    output (oy, ox) that read (y, x) through offset (ky, kx) and whose argmax
    is ky*kw + kx.
    """
    N, C, out_h, out_w = gy.shape
    grad = np.zeros((N, C, H, W), dtype=gy.dtype)
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x_ in range(W):
                    total = gy.dtype.type(0)
                    for ky, kx, oy, ox in _readers(y, x_, win, out_h, out_w):
                        if argmax[n, c, oy, ox] == ky * win.kw + kx:
                            total += gy[n, c, oy, ox]
                    grad[n, c, y, x_] = total
    return grad


def avg_pool_forward(x: np.ndarray, win: Window) -> np.ndarray:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w).

    y is the window sum over offsets (ky outer, kx inner), padding adding 0,
    divided by kh*kw.
    """
    kh, kw, sy, sx, ph, pw, dy, dx = win
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    out = np.zeros((N, C, out_h, out_w), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for oy in range(out_h):
                for ox in range(out_w):
                    total = x.dtype.type(0)
                    for ky in range(kh):
                        for kx in range(kw):
                            y = _source(oy, ky, sy, ph, dy)
                            x_ = _source(ox, kx, sx, pw, dx)
                            if 0 <= y < H and 0 <= x_ < W:
                                total += x[n, c, y, x_]
                    out[n, c, oy, ox] = total / x.dtype.type(kh * kw)
    return out


def avg_pool_backward(gy: np.ndarray, H: int, W: int, win: Window) -> np.ndarray:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W).

    gx[n, c, y, x] sums, over offsets (ky outer, kx inner), gy / (kh*kw)
    at every output (oy, ox) whose window read (y, x).
    """
    N, C, out_h, out_w = gy.shape
    area = gy.dtype.type(win.kh * win.kw)
    grad = np.zeros((N, C, H, W), dtype=gy.dtype)
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x_ in range(W):
                    total = gy.dtype.type(0)
                    for _, _, oy, ox in _readers(y, x_, win, out_h, out_w):
                        total += gy[n, c, oy, ox] / area
                    grad[n, c, y, x_] = total
    return grad


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1) -> np.ndarray:
    """Direct cross-correlation, the oracle for Conv2D.

    x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> y: (N, O, out_h, out_w)
    with y[n, o, oy, ox] = b[o] + sum over c, ky, kx of
    w[o, c, ky, kx] * x[n, c, oy*sy - ph + ky*dy, ox*sx - pw + kx*dx]
    (padding reads as 0). The sum runs c, ky, kx from 0, then adds the bias.
    """
    sy, sx = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dy, dx = pair(dilation, "dilation")
    N, C, H, W = x.shape
    O, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"conv2d: w has {Cw} input channels, x has {C}")
    out_h = get_conv_outsize(H, kh, sy, ph, dy)
    out_w = get_conv_outsize(W, kw, sx, pw, dx)
    dtype = np.result_type(x, w)
    out = np.zeros((N, O, out_h, out_w), dtype=dtype)
    for n in range(N):
        for o in range(O):
            for oy in range(out_h):
                for ox in range(out_w):
                    total = dtype.type(0)
                    for c in range(C):
                        for ky in range(kh):
                            for kx in range(kw):
                                y = _source(oy, ky, sy, ph, dy)
                                x_ = _source(ox, kx, sx, pw, dx)
                                if 0 <= y < H and 0 <= x_ < W:
                                    total += w[o, c, ky, kx] * x[n, c, y, x_]
                    if b is not None:
                        total += b[o]
                    out[n, o, oy, ox] = total
    return out


def lowbias32(z: int) -> int:
    """Chris Wellons' lowbias32 hash of a 32-bit unsigned integer (Dropout's masks)."""
    z ^= z >> 16
    z = (z * 0x7FEB352D) & 0xFFFFFFFF
    z ^= z >> 15
    z = (z * 0x846CA68B) & 0xFFFFFFFF
    return z ^ (z >> 16)


def dropout_forward(x: np.ndarray, key: int, p: float, first_sample: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout of x: (N, ...) -> (y, mask), element by element.

    With F features a sample, k_lo and k_hi the halves of the 64-bit key and
    u(i) = lowbias32(lowbias32(i ^ k_lo) ^ k_hi), feature j of sample n (counted
    from first_sample) takes the word lowbias32(u(j) ^ u(F + (first_sample + n) // 2)),
    its low 16 bits for an even sample, its high 16 bits for an odd one, and stays
    (mask 1/(1 - p), in x's dtype) when they reach round(p * 2**16); else mask 0.
    y = x * mask, one product in x's dtype.
    """
    N = x.shape[0]
    F = x.size // N if N else 0
    k_lo, k_hi = key & 0xFFFFFFFF, key >> 32
    threshold = min(2**16 - 1, round(p * 2**16))
    scale = x.dtype.type(1.0 / (1.0 - p))
    flat = x.reshape(N, F)
    y, mask = np.zeros((N, F), dtype=x.dtype), np.zeros((N, F), dtype=x.dtype)

    def u(i: int) -> int:
        return lowbias32(lowbias32(i ^ k_lo) ^ k_hi)

    for n in range(N):
        pair = u(F + (first_sample + n) // 2)
        for j in range(F):
            word = lowbias32(u(j) ^ pair)
            bits = word >> 16 if n % 2 else word & 0xFFFF
            if bits >= threshold:
                mask[n, j] = scale
            y[n, j] = flat[n, j] * mask[n, j]
    return y.reshape(x.shape), mask.reshape(x.shape)


def gather_rows(X: np.ndarray, y: np.ndarray, order: np.ndarray, step_at: np.ndarray,
                xb: np.ndarray, yb: np.ndarray) -> None:
    """A captured step's batch: xb[i, f] = X[order[s*B + i], f] and yb[i] = y[order[s*B + i]]
    for every i < B and feature f (X and xb flattened per row), s = step_at[0]."""
    B, s = xb.shape[0], int(step_at[0])
    rows, batch = X.reshape(X.shape[0], -1), xb.reshape(B, -1)
    for i in range(B):
        row = int(order[s * B + i])
        for f in range(rows.shape[1]):
            batch[i, f] = rows[row, f]
        yb[i] = y[row]


def layers_forward(layers: Sequence[Any], x: Any) -> Any:
    """A model's forward: each layer's output is the next layer's input."""
    for layer in layers:
        x = layer.forward(x)
    return x


def layers_backward(layers: Sequence[Any], gy: Any, input_grad: bool = True) -> Any:
    """A model's backward: the layers in reverse, each taking gy and returning gx (the
    first layer skips its gx without ``input_grad``: nothing needs it in training)."""
    for layer in reversed(layers[1:]):
        gy = layer.backward(gy)
    return layers[0].backward(gy, input_grad=input_grad)


# ---------------------------------------------------------------- the GEMM kernels

def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                   win: Window) -> tuple[np.ndarray, tuple[tuple[int, ...], np.ndarray]]:
    """x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> (y, saved).

    col = im2col(x), as a (C*kh*kw, N*out_h*out_w) matrix;
    y = w.reshape(O, C*kh*kw) @ col + b, as (N, O, out_h, out_w);
    saved = (x's shape, col), what conv2d_backward reads.
    """
    O = w.shape[0]
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    col = im2col(x, win)  # (C, kh, kw, N, out_h, out_w)
    y = w.reshape(O, -1) @ col.reshape(C * win.kh * win.kw, N * out_h * out_w)
    if b is not None:
        y = y + b[:, None]
    return y.reshape(O, N, out_h, out_w).transpose(1, 0, 2, 3), (tuple(x.shape), col)


def conv2d_backward(gy: np.ndarray, saved: tuple[tuple[int, ...], np.ndarray], w: np.ndarray,
                    win: Window, need_gx: bool, need_gb: bool
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """gy: (N, O, out_h, out_w), conv2d_forward's saved, w: (O, C, kh, kw) ->
    (gx (N, C, H, W) or None, gw (O, C, kh, kw), gb (O,) or None).

    With gy as an (O, N*out_h*out_w) matrix and col the forward's columns:
    gw = gy @ col.T;  gb = gy summed over its columns;  gx = col2im(w.T @ gy).
    """
    x_shape, col = saved
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    out_h, out_w = win.out_size(H, W)
    gy_mat = gy.transpose(1, 0, 2, 3).reshape(O, N * out_h * out_w)
    col_mat = col.reshape(C * kh * kw, N * out_h * out_w)
    gw = (gy_mat @ col_mat.T).reshape(w.shape)
    gb = gy_mat.sum(axis=1) if need_gb else None
    gx = None
    if need_gx:
        gcol = w.reshape(O, -1).T @ gy_mat  # (C*kh*kw, N*out_h*out_w)
        gx = col2im(gcol.reshape(C, kh, kw, N, out_h, out_w), H, W, win)
    return gx, gw, gb


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """x: (N, in), w: (in, out), b: (out,) or None -> y = x @ w + b: (N, out)."""
    y = x @ w
    if b is not None:
        y = y + b
    return y


def dense_backward(gy: np.ndarray, x: np.ndarray, w: np.ndarray, need_gx: bool,
                   need_gb: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """gy: (N, out), the forward's x (N, in), w: (in, out) ->
    (gx = gy @ w.T or None, gw = x.T @ gy, gb = gy summed over the batch or None)."""
    gw = x.T @ gy
    gb = gy.sum(axis=0) if need_gb else None
    gx = gy @ w.T if need_gx else None
    return gx, gw, gb
