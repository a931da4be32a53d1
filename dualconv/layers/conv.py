"""Conv2D: a 2-D convolution layer (PyTorch's argument order), as im2col + one GEMM.

Forward:  col = im2col(x)                        (C*kh*kw, N*out_h*out_w)
          y   = w.reshape(O, C*kh*kw) @ col + b  (O, N*out_h*out_w)
Backward: gw  = gy @ col.T,  gb = gy.sum(columns),
          gx  = col2im(w.T @ gy)

The three products are skinny (a few rows against N*out_h*out_w columns);
on the CPU they run in L2-sized blocks (blocked_matmul.py), the forward in bands
of output rows (conv2d_forward_bands: it keeps the input, not the columns, and the
backward copies them again a band at a time for gw, conv2d_weight_gradient_bands),
and for stride 1 gx a kernel offset at a time (_input_gradient_wide): the same sums,
made while their operands are in the cache. The GPU makes each product in one call.

The GEMMs take the columns with the batch axis last, (C*kh*kw, out_h*out_w*N),
the order both im2col twins store them in (see dualconv/kernels), so on
either backend every reshape below is free and the output lands batch-last,
(O, out_h, out_w, N), which the next layer's kernels read without a copy. The
caller gets (N, O, out_h, out_w) views.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .. import kernels
from ..backend import get_array_module
from ..kernels import cpu
from ..blocked_matmul import BLOCK_MULTIPLY_ADDS, MIN_BLOCK, matmul_column_blocks, matmul_inner_blocks
from ..init import get_initializer
from ..kernels.checks import check_fits, check_float
from ..layout import batch_first, batch_last, columns_batch_first, columns_batch_last
from ..shapes import Window, pair
from .base import Layer


def _column_matrix(col: Any) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> (C*kh*kw, out_h*out_w*N) matrix."""
    C, kh, kw, N, out_h, out_w = col.shape
    return columns_batch_last(col).reshape(C * kh * kw, out_h * out_w * N)


def conv2d_forward(x: Any, w: Any, b: Any | None, win: Window) -> tuple[Any, Any]:
    """The whole product: x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None
    -> (y (N, O, out_h, out_w), col (C, kh, kw, N, out_h, out_w), kept for the backward)."""
    O, C, kh, kw = w.shape
    N, _, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    if b is not None and isinstance(x, np.ndarray):
        # on the CPU the bias rides in the GEMM as one more term ([w | b] @ [col; 1]):
        # no pass of its own over the output
        columns = cpu.im2col_with_ones(x, win)
        y = matmul_column_blocks(_with_bias(w, b), columns)
        col = columns_batch_first(columns[:-1].reshape(C, kh, kw, out_h, out_w, N))
    else:
        col = kernels.im2col(x, win)
        y = matmul_column_blocks(w.reshape(O, -1), _column_matrix(col))
        if b is not None:
            y += b[:, None]
    return batch_first(y.reshape(O, out_h, out_w, N)), col


def _with_bias(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[w | b]: w (O, C, kh, kw) as an (O, C*kh*kw) matrix with b as one more column."""
    return np.concatenate([w.reshape(w.shape[0], -1), b[:, None]], axis=1)


def band_rows(w: np.ndarray, bias: bool, x_shape: tuple[int, ...], win: Window) -> int | None:
    """Output rows per band of conv2d_forward_bands for the weight w (O, C, kh, kw) and an
    input of x_shape, or None where bands do not pay (the whole product is faster).

    A band is as many rows as keep its product within BLOCK_MULTIPLY_ADDS, the size
    OpenBLAS multiplies without packing copies, and one row at least. Bands pay where
    the columns (C*kh*kw numbers an output pixel) outweigh the output (O) twice over,
    so that writing them all and reading them back costs more than smaller products,
    and where one row's product is within that size. Measured on one core (Intel),
    inference: LeNet's conv1 at 64 images (3 rows a band) 0.66 -> 0.41 ms, conv2 (one
    row: 1.5M multiply-adds, but 150 column numbers to 16 outputs) 0.95 -> 0.62;
    weidman's conv at 32 (one row) 0.61 -> 0.55, at 64 (a row of 1.5M, 26 column numbers
    to 32 outputs) 1.36 -> 1.6, so it runs whole. In training (the backward copies the
    columns again, conv2d_weight_gradient_bands) weidman's step at batch 64, in parts of
    32, 3% more images/s with its convolution in bands (paired medians of 6, 2 cores).
    """
    O, C, kh, kw = w.shape
    if x_shape[0] == 0:
        return None  # nothing to multiply: the whole (empty) product
    rows = rows_within_block(w, bias, x_shape, win)
    if C * kh * kw < 2 * O and rows == 0:
        return None
    return max(1, rows)


def rows_within_block(w: np.ndarray, bias: bool, x_shape: tuple[int, ...], win: Window) -> int:
    """How many output rows of the convolution of an input of x_shape (N > 0) by w
    (O, C, kh, kw) keep a band's product within BLOCK_MULTIPLY_ADDS (0: not even one)."""
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    out_w = win.out_size(H, W)[1]
    return BLOCK_MULTIPLY_ADDS // (O * (C * kh * kw + int(bias)) * out_w * N)


def conv2d_forward_bands(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window,
                         rows: int) -> np.ndarray:
    """conv2d_forward's y on the CPU, ``rows`` output rows at a time (band_rows):
    x (N, C, H, W) -> y (N, O, out_h, out_w).

    The whole product writes every column (LeNet's conv1 at 64 images: 5 MB) and then
    reads them back from memory. Here a band's columns (band_columns) are multiplied
    while they are in the cache, and no columns are kept: a backward copies them again
    from the input (conv2d_weight_gradient_bands). Every output is the same dot product
    as the whole product's, which BLAS may sum in another order for a band's narrower
    matrix: the two agree within that product's rounding bound, not always to the last bit.
    """
    O = w.shape[0]
    N, _, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    weights = band_weights(w, b)
    y = np.empty((O, out_h, out_w, N), dtype=np.result_type(x, w))
    for first, last, columns in band_columns(x, weights.shape[1], win, rows):
        np.matmul(weights, columns, out=y[:, first:last].reshape(O, -1))
    return batch_first(y)


def band_weights(w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The matrix a band's columns are multiplied by: w (O, C, kh, kw) as (O, C*kh*kw),
    or with a bias [w | b], the bias riding in the product as in conv2d_forward."""
    return w.reshape(w.shape[0], -1) if b is None else _with_bias(w, b)


def band_columns(x: np.ndarray, width: int, win: Window, rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """The columns of a convolution of x (N, C, H, W), a band of ``rows`` output rows at a time.

    Yields (first, last, columns): columns is the (width, (last - first)*out_w*N) matrix
    of output rows [first, last) in im2col's order, copied from the input's windows when
    it is reached; ``width`` is C*kh*kw, plus one for a bias (a last row of ones). Every
    band reuses one matrix, one band's size, so it stays in the cache: a band's columns
    are gone when the next is made.
    """
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    windows = cpu.all_windows(x, win)  # (C, kh, kw, out_h, out_w, N), a view
    inner = C * win.kh * win.kw
    row = out_w * N  # columns an output row
    matrix = np.empty((width, min(rows, out_h) * row), dtype=x.dtype)
    matrix[inner:] = 1  # the row of ones that multiplies the bias
    for first in range(0, out_h, rows):
        last = min(out_h, first + rows)
        columns = matrix[:, :(last - first) * row]
        np.copyto(columns[:inner].reshape(C, win.kh, win.kw, last - first, out_w, N),
                  windows[:, :, :, first:last])
        yield first, last, columns


def conv2d_weight_gradient_bands(x: np.ndarray, gy_mat: np.ndarray, w: np.ndarray,
                                 win: Window) -> np.ndarray:
    """gw = gy @ col.T on the CPU for a forward that ran in bands and kept only its input
    x: its columns copied again a band of output rows at a time, each band's share of
    the sums made while they are in the cache.

    x: (N, C, H, W), gy_mat: (O, out_h*out_w*N), the output gradient batch-last ->
    gw (O, C, kh, kw).

    Keeping the forward's columns instead (LeNet's two convolutions at 64 images: 5.2 and
    3.9 MB) writes them to memory and reads them back. Here a band's product with gy's
    band, transposed (the orientation conv2d_backward explains), is the band's share of
    gw.T; the shares are added band by band, a summation order of the dot products like
    any other, within gamma(K) of their |terms|. Measured (one core, Intel, SkylakeX
    kernels), LeNet's conv1, its forward and weight gradient at 64 images: 1.03 -> 0.92
    ms; conv2 1.24 -> 1.23 ms. LeNet's training step with a worker process (paired
    medians of 6 fresh processes, two runs): 5-6% more images/s at batch 64, 16-22% at
    256 (Haswell kernels: 3%, 17%): two cores no longer write and read back 9 MB of
    columns a part at once.
    """
    O, C, kh, kw = w.shape
    N, _, H, W = x.shape
    out_w = win.out_size(H, W)[1]
    rows = max(1, rows_within_block(w, False, x.shape, win))
    row = out_w * N  # columns an output row
    total = None  # (C*kh*kw, O): gw.T
    for first, last, columns in band_columns(x, C * kh * kw, win, rows):
        part = columns @ gy_mat[:, first * row:last * row].T
        total = part if total is None else np.add(total, part, out=total)
    return np.ascontiguousarray(total.T).reshape(w.shape)


def conv2d_backward(gy: Any, x_shape: tuple[int, ...], w: Any, kept: Any, win: Window,
                    need_gx: bool = True) -> tuple[Any | None, Any, Any]:
    """gy: (N, O, out_h, out_w) and what the forward kept: conv2d_forward's col
    (C, kh, kw, N, out_h, out_w), or the input x (N, C, H, W) of a forward in bands
    (CPU), whose columns are made again band by band (conv2d_weight_gradient_bands)
    -> (gx (N, C, H, W) or None, gw (O, C, kh, kw), gb (O,))."""
    xp = get_array_module(gy)
    O = w.shape[0]
    gy_mat = xp.ascontiguousarray(batch_last(gy)).reshape(O, -1)  # (O, out_h*out_w*N)
    # gw = gy @ col.T. On the CPU, gw.T = col @ gy.T makes the same sums in the
    # orientation OpenBLAS runs 1.1-1.8x faster for these shapes (a long inner
    # dimension, stride 1 in both); transposing it back copies a few KB. cuBLAS
    # takes either, so the GPU computes gw as it is stored: no copy.
    if kept.ndim == 4:
        gw = conv2d_weight_gradient_bands(kept, gy_mat, w, win)
    elif xp is np:
        gw = matmul_inner_blocks(_column_matrix(kept), gy_mat.T).T.reshape(w.shape)
    else:
        gw = (gy_mat @ _column_matrix(kept).T).reshape(w.shape)
    gb = gy_mat.sum(axis=1)
    gx = conv2d_input_gradient(gy_mat, w, x_shape, win) if need_gx else None
    return gx, gw, gb


def conv2d_input_gradient(gy_mat: Any, w: Any, x_shape: tuple[int, ...], win: Window) -> Any:
    """gx = col2im(w.T @ gy): gy_mat (O, out_h*out_w*N), the output gradient batch-last
    -> gx (N, C, H, W). On the CPU, for stride 1, made a kernel offset at a time
    (_input_gradient_wide)."""
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    out_h, out_w = win.out_size(H, W)
    if _folds_wide(gy_mat, win):
        return _input_gradient_wide(w, gy_mat, x_shape, win)
    gcol = matmul_column_blocks(w.reshape(O, -1).T, gy_mat).reshape(C, kh, kw, out_h, out_w, N)
    return kernels.col2im(columns_batch_first(gcol), H, W, win)


def _input_gradient_wide(w: np.ndarray, gy_mat: np.ndarray, x_shape: tuple[int, ...],
                         win: Window) -> np.ndarray:
    """col2im(w.T @ gy) on the CPU for a window of stride 1, a kernel offset at a time.

    w: (O, C, kh, kw), gy_mat: (O, out_h*out_w*N) -> gx (N, C, H, W).

    conv2d_backward's general path writes every column of w.T @ gy (LeNet's conv2 at 64
    images: 3.8 MB) and col2im adds them back kh*kw times, each add in C*out_h short
    runs of out_w*N numbers (NumPy pays per run). Here the columns of the kw offsets of
    one kernel row ky, w[:, :, ky, kx].T @ gy for every kx, are made in a small buffer
    that stays in the cache (one product of one batched call per output row), and each
    offset's are stored "wide": each row of out_w columns at the padded image's pitch
    Wp, then zeros. With stride 1 the offset's columns land on one contiguous stretch of
    the padded image from pixel (ky*dy, kx*dx) on, so the fold is one add over C long
    runs, offsets in col2im's order; the zeros land between the rows and add +0.0, which
    changes no sum (every pixel starts at +0.0, and a sum that starts at +0.0 is never
    -0.0; x + 0.0 is x for every other x, inf and NaN included). So each pixel gets
    col2im's terms in col2im's order; every term is the dot product of the general path,
    which BLAS may sum in another order for these smaller products: the two agree within
    its rounding bound. Measured on one core (Intel), LeNet's conv2: 0.58 -> 0.35 ms at
    32 images, 1.01 -> 0.57 at 64 (an offset a product). A kernel row a product (kw*C
    rows, not C) pays the packing of gy once a row where OpenBLAS packs every product
    (its Haswell kernels, which an earlier AMD VM ran): a LeNet training part 5% (32
    images) and 4% (64) faster there than an offset a product, and as fast with the
    SkylakeX kernels (paired ratios 0.999-1.004, medians of 15).
    """
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    out_h, out_w = win.out_size(H, W)
    Hp, Wp = H + 2 * win.ph, W + 2 * win.pw
    wide = np.empty((kw, C, out_h, Wp, N), dtype=gy_mat.dtype)  # a kernel row of offsets
    wide[..., out_w:, :] = 0
    rows_out = wide[..., :out_w, :].reshape(kw * C, out_h, out_w * N).transpose(1, 0, 2)  # (out_h, kw*C, out_w*N)
    rows_in = gy_mat.reshape(O, out_h, out_w * N).transpose(1, 0, 2)  # (out_h, O, out_w*N)
    length = ((out_h - 1) * Wp + out_w) * N  # from the first column to the last one kept
    runs = wide.reshape(kw, C, out_h * Wp * N)[:, :, :length]
    image = np.zeros((C, Hp * Wp * N), dtype=gy_mat.dtype)  # padded, batch-last, flat
    for ky in range(kh):
        weights = w[:, :, ky, :].transpose(2, 1, 0).reshape(kw * C, O)  # rows (kx, c)
        np.matmul(weights, rows_in, out=rows_out)
        for kx in range(kw):
            start = (ky * win.dy * Wp + kx * win.dx) * N
            target = image[:, start:start + length]
            np.add(target, runs[kx], out=target)
    return cpu.unpadded_batch_first(image.reshape(C, Hp, Wp, N), win.ph, win.pw)


def _folds_wide(gy_mat: Any, win: Window) -> bool:
    """Whether conv2d_backward takes _input_gradient_wide: on the CPU, for stride 1, and
    a product of MIN_BLOCK columns or more (smaller ones are one call, as on the GPU)."""
    return isinstance(gy_mat, np.ndarray) and (win.sy, win.sx) == (1, 1) and gy_mat.shape[1] >= MIN_BLOCK


class Conv2D(Layer):
    """y[n, o] = b[o] + sum_c cross_correlate(x[n, c], W[o, c]).

    x: (N, in_channels, H, W) -> y: (N, out_channels, out_h, out_w).
    weight: (out_channels, in_channels, kh, kw), bias: (out_channels,).
    ``in_channels=None`` is inferred at the first forward. ``padding`` is an
    int, a pair, "valid" (0) or "same" (output size = input size; stride 1).
    """

    couples_samples = False

    def __init__(self, in_channels: int | None, out_channels: int,
                 kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, dilation: int | tuple[int, int] = 1,
                 bias: bool = True, weight_init: str = "glorot") -> None:
        super().__init__()
        if out_channels is None or int(out_channels) < 1:
            raise ValueError(f"Conv2D: out_channels must be a positive int, got {out_channels!r}")
        if in_channels is not None and int(in_channels) < 1:
            raise ValueError(f"Conv2D: in_channels must be a positive int or None, got {in_channels!r}")
        self.in_channels = in_channels
        self.out_channels = int(out_channels)
        self.kh, self.kw = pair(kernel_size, "Conv2D kernel_size")
        self.sy, self.sx = pair(stride, "Conv2D stride")
        self.dy, self.dx = pair(dilation, "Conv2D dilation")
        self.padding = padding
        self.ph, self.pw = self._padding_amounts(padding)
        self.use_bias = bool(bias)
        self.weight_init = weight_init
        get_initializer(weight_init)
        for what, value in (("kernel_size", (self.kh, self.kw)), ("stride", (self.sy, self.sx)),
                            ("dilation", (self.dy, self.dx))):
            if min(value) < 1:
                raise ValueError(f"Conv2D: {what} must be >= 1, got {value}")
        if min(self.ph, self.pw) < 0:
            raise ValueError(f"Conv2D: padding must be >= 0, got {padding!r}")
        if in_channels is not None:
            self.build((1, int(in_channels), None, None))

    def _padding_amounts(self, padding: Any) -> tuple[int, int]:
        if isinstance(padding, str):
            if padding == "valid":
                return 0, 0
            if padding == "same":
                if (self.sy, self.sx) != (1, 1):
                    raise ValueError(f"Conv2D: padding='same' needs stride 1, got stride {(self.sy, self.sx)}")
                span_h, span_w = self.dy * (self.kh - 1), self.dx * (self.kw - 1)
                if span_h % 2 or span_w % 2:
                    raise ValueError(
                        f"Conv2D: padding='same' needs an odd effective kernel size, got "
                        f"kernel {(self.kh, self.kw)} with dilation {(self.dy, self.dx)}")
                return span_h // 2, span_w // 2
            raise ValueError(f"Conv2D: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        return pair(padding, "Conv2D padding")

    @property
    def window(self) -> Window:
        return Window(self.kh, self.kw, self.sy, self.sx, self.ph, self.pw, self.dy, self.dx)

    def _create_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        self.in_channels = int(input_shape[1])
        shape = (self.out_channels, self.in_channels, self.kh, self.kw)
        self._set_param("weight", get_initializer(self.weight_init)(shape, rng))
        if self.use_bias:
            self._set_param("bias", np.zeros(self.out_channels))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        N, _, H, W = input_shape
        if H is None:
            return (N, self.out_channels, None, None)
        out_h, out_w = check_fits(H, W, self.window, self.name)
        return (N, self.out_channels, out_h, out_w)

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        self._require_ndim(x, 4, "(N, C, H, W)")
        check_float(x, "input", self.name)
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv2D: expected {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})")
        self.output_shape(tuple(x.shape))

    def _forward(self, x: Any) -> Any:
        w, b = self.params["weight"], self.params.get("bias")
        rows = band_rows(w, b is not None, x.shape, self.window) if isinstance(x, np.ndarray) else None
        if rows:
            # on the CPU in bands: the input is kept, not the columns; the backward copies
            # them again a band at a time (conv2d_weight_gradient_bands)
            self._cache = (tuple(x.shape), x)
            return conv2d_forward_bands(x, w, b, self.window, rows)
        y, col = conv2d_forward(x, w, b, self.window)
        self._cache = (tuple(x.shape), col)
        return y

    def _backward(self, gy: Any) -> Any:
        x_shape, kept = self._cache
        self._check_grad_shape(gy, self.output_shape(x_shape))
        gx, gw, gb = conv2d_backward(gy, x_shape, self.params["weight"], kept, self.window,
                                     need_gx=self._need_input_grad)
        self.grads["weight"] = gw
        if self.use_bias:
            self.grads["bias"] = gb
        return gx

    def get_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": (self.kh, self.kw), "stride": (self.sy, self.sx),
                "padding": self.padding if isinstance(self.padding, str) else (self.ph, self.pw),
                "dilation": (self.dy, self.dx), "bias": self.use_bias, "weight_init": self.weight_init}
