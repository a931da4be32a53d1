"""2-D convolution (cross-correlation) as im2col + one GEMM.

Forward:  col = im2col(x)                        (C*kh*kw, N*out_h*out_w)
          y   = W.reshape(O, C*kh*kw) @ col + b  (O, N*out_h*out_w)
Backward: dW  = dy @ col.T,  db = dy.sum(columns),
          dx  = col2im(W.T @ dy)

The GEMMs take the columns with the batch axis last, (C*kh*kw, out_h*out_w*N),
the order the NumPy im2col stores them in (see kernels_numpy.py), so on the
CPU every reshape below is free and the output lands batch-last, (O, out_h,
out_w, N), which the next layer's kernels read without a copy. The caller
gets (N, O, out_h, out_w) views. (The CUDA kernels store columns batch-major;
on the GPU the reshape makes one copy, cheap at GPU bandwidth.)
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_array_module
from ..kernels_dispatch import kernels_for
from ..layout import batch_first, batch_last, columns_batch_first, columns_batch_last


class ConvGeometry(NamedTuple):
    """Stride (sy, sx), padding (ph, pw) and dilation (dy, dx) of a convolution."""
    sy: int
    sx: int
    ph: int
    pw: int
    dy: int
    dx: int


def _column_matrix(col: Any) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> (C*kh*kw, out_h*out_w*N) matrix."""
    C, kh, kw, N, out_h, out_w = col.shape
    return columns_batch_last(col).reshape(C * kh * kw, out_h * out_w * N)


def conv2d_forward(x: Any, w: Any, b: Any | None, g: ConvGeometry) -> tuple[Any, Any]:
    """x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> (y (N, O, out_h, out_w), col)."""
    kernels = kernels_for(get_array_module(x))
    O, C, kh, kw = w.shape
    col = kernels.im2col(x, kh, kw, g.sy, g.sx, g.ph, g.pw, g.dy, g.dx)
    _, _, _, N, out_h, out_w = col.shape
    y = w.reshape(O, -1) @ _column_matrix(col)
    if b is not None:
        y += b[:, None]
    return batch_first(y.reshape(O, out_h, out_w, N)), col


def conv2d_backward(dy: Any, x_shape: tuple[int, ...], w: Any, col: Any, g: ConvGeometry,
                    need_dx: bool = True) -> tuple[Any | None, Any, Any]:
    """dy: (N, O, out_h, out_w) -> (dx (N, C, H, W) or None, dW (O, C, kh, kw), db (O,))."""
    xp = get_array_module(dy)
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    _, _, out_h, out_w = dy.shape
    dy_mat = xp.ascontiguousarray(batch_last(dy)).reshape(O, -1)  # (O, out_h*out_w*N)
    col_mat = _column_matrix(col)
    dw = (dy_mat @ col_mat.T).reshape(w.shape)
    db = dy_mat.sum(axis=1)
    dx = None
    if need_dx:
        dcol = (w.reshape(O, -1).T @ dy_mat).reshape(C, kh, kw, out_h, out_w, N)
        dx = kernels_for(xp).col2im(columns_batch_first(dcol), H, W,
                                    g.sy, g.sx, g.ph, g.pw, g.dy, g.dx)
    return dx, dw, db
