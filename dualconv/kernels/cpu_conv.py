"""The CPU twin of the convolution's GEMMs: conv2d_forward and conv2d_backward with NumPy.

The contract (dualconv.kernels): x (N, C, H, W), w (O, C, kh, kw), b (O,) or None
-> y (N, O, out_h, out_w) and ``saved``, the pair (x's shape, what the backward
reads); the backward gives gx (N, C, H, W), gw (O, C, kh, kw) and gb (O,). The
sums are the textbook's (reference.py): y = w @ im2col(x) + b, gw = gy @ col.T,
gb = the sum of gy over the columns, gx = col2im(w.T @ gy). Each output is the
same dot product as there; BLAS may add its terms in another order, so this
twin agrees with the reference within the products' rounding bound, not always
to the last bit.

The three products are skinny (a few rows against N*out_h*out_w columns), so
this twin makes them while their operands are in the cache:

* the products run in L2-sized blocks (blocked.py);
* the bias rides in the forward GEMM as one more term ([w | b] @ [col; 1]),
  with no pass of its own over the output;
* where it pays (band_rows), the forward runs in bands of output rows
  (conv2d_forward_bands): it keeps the input, not the columns, and the backward
  copies them again a band at a time for gw (conv2d_weight_gradient_bands);
* for stride 1, gx is made a kernel offset at a time and folded "wide"
  (input_gradient_wide).

The GEMMs take the columns with the batch axis last, (C*kh*kw, out_h*out_w*N),
the order im2col stores them in, so every reshape is free and the output lands
batch-last, (O, out_h, out_w, N), which the next layer's kernels read without a
copy; the caller gets (N, O, out_h, out_w) views. Inputs are checked once, by
the dispatch point; these functions trust their arguments.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..shapes import Window
from . import cpu, native_conv
from .blocked import BLOCK_MULTIPLY_ADDS, MIN_BLOCK, even_blocks, matmul_column_blocks, matmul_inner_blocks
from .layout import batch_first, batch_last, columns_batch_first, columns_batch_last


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                   win: Window) -> tuple[np.ndarray, tuple[tuple[int, ...], np.ndarray]]:
    """x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> (y (N, O, out_h, out_w),
    saved): saved is (x's shape, x itself) when the forward ran in bands (band_rows),
    else (x's shape, col (C, kh, kw, N, out_h, out_w)), the columns it multiplied. Where
    the compiled kernels apply (native_conv.py) they make y, and saved keeps x, as bands do."""
    compiled = native_conv.forward(x, w, b, win)
    if compiled is not None:
        return compiled, (tuple(x.shape), x)
    rows = band_rows(w, b is not None, x.shape, win)
    if rows:
        return conv2d_forward_bands(x, w, b, win, rows), (tuple(x.shape), x)
    y, col = conv2d_forward_whole(x, w, b, win)
    return y, (tuple(x.shape), col)


def conv2d_backward(gy: np.ndarray, saved: tuple[tuple[int, ...], np.ndarray], w: np.ndarray,
                    win: Window, need_gx: bool, need_gb: bool
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """gy: (N, O, out_h, out_w) and conv2d_forward's saved -> (gx (N, C, H, W) or None,
    gw (O, C, kh, kw), gb (O,) or None). Kept columns are multiplied as they are; from a
    kept input, the compiled kernels make gw where they apply (native_conv.py), else its
    columns are made again band by band (conv2d_weight_gradient_bands)."""
    x_shape, kept = saved
    O = w.shape[0]
    gy_stored = np.ascontiguousarray(batch_last(gy))  # (O, out_h, out_w, N), copied at most once
    gy_mat = gy_stored.reshape(O, -1)  # (O, out_h*out_w*N)
    # gw = gy @ col.T, made as gw.T = col @ gy.T: the same sums, in the orientation
    # OpenBLAS runs faster for these shapes (a long inner dimension, stride 1 in both);
    # transposing it back copies a few KB.
    if kept.ndim == 4:
        gw = native_conv.weight_gradient(batch_first(gy_stored), kept, w, win)
        if gw is None:
            gw = conv2d_weight_gradient_bands(kept, gy_mat, w, win)
    else:
        gw = matmul_inner_blocks(_column_matrix(kept), gy_mat.T).T.reshape(w.shape)
    gb = gy_mat.sum(axis=1) if need_gb else None
    gx = conv2d_input_gradient(gy_mat, w, x_shape, win) if need_gx else None
    return gx, gw, gb


def _column_matrix(col: np.ndarray) -> np.ndarray:
    """col: (C, kh, kw, N, out_h, out_w) -> (C*kh*kw, out_h*out_w*N) matrix, a view of
    im2col's storage."""
    C, kh, kw, N, out_h, out_w = col.shape
    return columns_batch_last(col).reshape(C * kh * kw, out_h * out_w * N)


def conv2d_forward_whole(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                         win: Window) -> tuple[np.ndarray, np.ndarray]:
    """The whole product: x (N, C, H, W) -> (y (N, O, out_h, out_w), col (C, kh, kw, N,
    out_h, out_w)). With a bias, [w | b] @ im2col_with_ones(x): the bias is one more
    term of each dot product, added in the GEMM."""
    O, C, kh, kw = w.shape
    N, _, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    if b is not None:
        columns = im2col_with_ones(x, win)
        y = matmul_column_blocks(_with_bias(w, b), columns)
        col = columns_batch_first(columns[:-1].reshape(C, kh, kw, out_h, out_w, N))
    else:
        col = cpu.im2col(x, win)
        y = matmul_column_blocks(w.reshape(O, -1), _column_matrix(col))
    return batch_first(y.reshape(O, out_h, out_w, N)), col


def im2col_with_ones(x: np.ndarray, win: Window) -> np.ndarray:
    """im2col's columns as one (C*kh*kw + 1, out_h*out_w*N) matrix, in the order im2col
    stores them, with a last row of ones: [w | b] @ it is w @ col + b, a convolution's
    bias added as one more term of each dot product instead of a pass of its own over
    the output."""
    windows = cpu.all_windows(x, win)
    C, kh, kw, out_h, out_w, N = windows.shape
    matrix = np.empty((C * kh * kw + 1, out_h * out_w * N), dtype=x.dtype)
    np.copyto(matrix[:-1].reshape(windows.shape), windows)
    matrix[-1] = 1
    return matrix


def _with_bias(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[w | b]: w (O, C, kh, kw) as an (O, C*kh*kw) matrix with b as one more column."""
    return np.concatenate([w.reshape(w.shape[0], -1), b[:, None]], axis=1)


# ---------------------------------------------------------------- bands of output rows

def band_rows(w: np.ndarray, bias: bool, x_shape: tuple[int, ...], win: Window) -> int | None:
    """Output rows per band of conv2d_forward_bands for the weight w (O, C, kh, kw) and an
    input of x_shape, or None where the whole product runs instead.

    A band is as many rows as keep its product within BLOCK_MULTIPLY_ADDS, the size
    OpenBLAS multiplies without packing copies, and one row at least. Bands run where
    the columns (C*kh*kw numbers an output pixel) outweigh the output (O) twice over,
    so that writing them all and reading them back costs more than smaller products,
    or where one row's product is within that size (a row over it goes in pieces:
    band_piece). The rule trades the columns' trip through memory against the smaller
    products' per-call cost; it was chosen with benchmarks/lenet_vs_torch.py (LeNet and
    weidman, training and inference).
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
    N, _, H, W = x_shape
    return pixels_within_block(w, bias, N) // win.out_size(H, W)[1]


def pixels_within_block(w: np.ndarray, bias: bool, N: int) -> int:
    """How many output pixels, each for all N > 0 samples, keep a product by w (O, C, kh, kw)
    within BLOCK_MULTIPLY_ADDS: each costs O * (C*kh*kw, plus one for a bias) * N."""
    O, C, kh, kw = w.shape
    return BLOCK_MULTIPLY_ADDS // (O * (C * kh * kw + int(bias)) * N)


def conv2d_forward_bands(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window,
                         rows: int, piece: int | None = None) -> np.ndarray:
    """conv2d_forward's y, ``rows`` output rows at a time: x (N, C, H, W) -> y
    (N, O, out_h, out_w), stored batch-last. With ``piece`` (by default band_piece's
    where a band is one row), each band is one row, ``piece`` output columns at a time.

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
    if piece is None and rows == 1:
        piece = band_piece(w, b is not None, x.shape, win)
    y = np.empty((O, out_h * out_w * N), dtype=np.result_type(x, w))
    for start, stop, columns in band_columns(x, weights.shape[1], win, rows, piece):
        np.matmul(weights, columns, out=y[:, start:stop])
    return batch_first(y.reshape(O, out_h, out_w, N))


def band_piece(w: np.ndarray, bias: bool, x_shape: tuple[int, ...], win: Window) -> int | None:
    """Output columns per band where one output row's product is over BLOCK_MULTIPLY_ADDS
    (the row split into as few equal pieces within it as will do, one column at least),
    else None: a row is a band (and for an empty batch).

    OpenBLAS multiplies a product of at most 100^3 multiply-adds in its small-matrix kernels,
    without packing copies, so a row just over that size (the ``fast`` model's conv2 at 32
    images: 16 x 201 x 320) goes faster in pieces within it (benchmarks/README.md, "A row
    over the limit in pieces").
    """
    N, _, H, W = x_shape
    if N == 0:
        return None
    out_w = win.out_size(H, W)[1]
    fit = pixels_within_block(w, bias, N)
    return None if fit >= out_w else even_blocks(out_w, max(1, fit))


def band_weights(w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The matrix a band's columns are multiplied by: w (O, C, kh, kw) as (O, C*kh*kw),
    or with a bias [w | b], the bias riding in the product as in conv2d_forward_whole."""
    return w.reshape(w.shape[0], -1) if b is None else _with_bias(w, b)


def band_columns(x: np.ndarray, width: int, win: Window, rows: int,
                 piece: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """The columns of a convolution of x (N, C, H, W), a band of ``rows`` output rows at a
    time, or, with ``piece`` under a row's width, ``piece`` output columns of one row at a
    time (``rows`` is then taken as 1: a band's columns must be one stretch of the order).

    Yields (start, stop, columns): columns is the (width, stop - start) matrix of the
    columns [start, stop) of im2col's order (output row, output column, sample), copied
    from the input's windows when it is reached; ``width`` is C*kh*kw, plus one for a bias
    (a last row of ones). Every band reuses one matrix, one band's size, so it stays in
    the cache: a band's columns are gone when the next is made.
    """
    N, C, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    if piece is None or piece >= out_w:
        piece = max(1, out_w)
    else:
        piece, rows = max(1, piece), 1
    windows = cpu.all_windows(x, win)  # (C, kh, kw, out_h, out_w, N), a view
    inner = C * win.kh * win.kw
    matrix = np.empty((width, min(rows, out_h) * min(piece, out_w) * N), dtype=x.dtype)
    matrix[inner:] = 1  # the row of ones that multiplies the bias
    for first in range(0, out_h, rows):
        last = min(out_h, first + rows)
        for left in range(0, out_w, piece):
            right = min(out_w, left + piece)
            start, count = (first * out_w + left) * N, (last - first) * (right - left) * N
            columns = matrix[:, :count]
            np.copyto(columns[:inner].reshape(C, win.kh, win.kw, last - first, right - left, N),
                      windows[:, :, :, first:last, left:right])
            yield start, start + count, columns


def conv2d_weight_gradient_bands(x: np.ndarray, gy_mat: np.ndarray, w: np.ndarray,
                                 win: Window) -> np.ndarray:
    """gw = gy @ col.T for a forward that ran in bands and kept only its input x: its
    columns copied again a band of output rows at a time, each band's share of the sums
    made while they are in the cache.

    x: (N, C, H, W), gy_mat: (O, out_h*out_w*N), the output gradient batch-last ->
    gw (O, C, kh, kw).

    Keeping the forward's columns instead (LeNet's two convolutions at 64 images: 5.2 and
    3.9 MB) writes them to memory and reads them back. Here a band's product with gy's
    band, transposed (the orientation conv2d_backward explains), is the band's share of
    gw.T; the shares are added band by band, a summation order of the dot products like
    any other, within gamma(K) of their |terms|.
    """
    O, C, kh, kw = w.shape
    rows = max(1, rows_within_block(w, False, x.shape, win))
    total = None  # (C*kh*kw, O): gw.T
    for start, stop, columns in band_columns(x, C * kh * kw, win, rows):
        part = columns @ gy_mat[:, start:stop].T
        total = part if total is None else np.add(total, part, out=total)
    return np.ascontiguousarray(total.T).reshape(w.shape)


# ---------------------------------------------------------------- the input gradient

def conv2d_input_gradient(gy_mat: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...],
                          win: Window) -> np.ndarray:
    """gx = col2im(w.T @ gy): gy_mat (O, out_h*out_w*N), the output gradient batch-last
    -> gx (N, C, H, W). For stride 1 and a product of MIN_BLOCK columns or more, made a
    kernel offset at a time (input_gradient_wide)."""
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    out_h, out_w = win.out_size(H, W)
    compiled = native_conv.input_gradient(batch_first(gy_mat.reshape(O, out_h, out_w, N)), w, x_shape, win)
    if compiled is not None:
        return compiled
    if folds_wide(gy_mat, win):
        return input_gradient_wide(w, gy_mat, x_shape, win)
    gcol = matmul_column_blocks(w.reshape(O, -1).T, gy_mat).reshape(C, kh, kw, out_h, out_w, N)
    return cpu.col2im(columns_batch_first(gcol), H, W, win)


def folds_wide(gy_mat: np.ndarray, win: Window) -> bool:
    """Whether conv2d_input_gradient takes input_gradient_wide: for stride 1, and a
    product of MIN_BLOCK columns or more (smaller ones are one call)."""
    return (win.sy, win.sx) == (1, 1) and gy_mat.shape[1] >= MIN_BLOCK


def input_gradient_wide(w: np.ndarray, gy_mat: np.ndarray, x_shape: tuple[int, ...],
                        win: Window) -> np.ndarray:
    """col2im(w.T @ gy) for a window of stride 1, a kernel row of offsets at a time.

    w: (O, C, kh, kw), gy_mat: (O, out_h*out_w*N) -> gx (N, C, H, W), stored batch-last.

    The general path writes every column of w.T @ gy (LeNet's conv2 at 64 images:
    3.8 MB) and col2im adds them back kh*kw times, each add in C*out_h short runs of
    out_w*N numbers (NumPy pays per run). Here the columns of the kw offsets of one
    kernel row ky, w[:, :, ky, kx].T @ gy for every kx, are made in a small buffer that
    stays in the cache (one product of one batched call per output row), and each
    offset's are stored "wide": each row of out_w columns at the padded image's pitch
    Wp, then zeros. With stride 1 the offset's columns land on one contiguous stretch of
    the padded image from pixel (ky*dy, kx*dx) on, so the fold is one add over C long
    runs, offsets in col2im's order; the zeros land between the rows and add +0.0, which
    changes no sum (every pixel starts at +0.0, and a sum that starts at +0.0 is never
    -0.0; x + 0.0 is x for every other x, inf and NaN included). So each pixel gets
    col2im's terms in col2im's order; every term is the dot product of the general path,
    which BLAS may sum in another order for these smaller products: the two agree within
    its rounding bound. A kernel row a product (kw*C rows, not C) pays the packing of gy
    once a row where OpenBLAS packs every product.
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

