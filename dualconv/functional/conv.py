"""2-D convolution (cross-correlation) as im2col + one GEMM.

Forward:  col = im2col(x)                        (C*kh*kw, N*out_h*out_w)
          y   = W.reshape(O, C*kh*kw) @ col + b  (O, N*out_h*out_w)
Backward: dW  = dy @ col.T,  db = dy.sum(columns),
          dx  = col2im(W.T @ dy)

The GEMM lands in (O, N, out_h, out_w) order; the caller gets it as an
(N, O, out_h, out_w) view without a copy, and the next im2col reads that view
directly, so activations stay channel-major between convolutions.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_array_module
from ..kernels_dispatch import kernels_for


class ConvGeometry(NamedTuple):
    """Stride (sy, sx), padding (ph, pw) and dilation (dy, dx) of a convolution."""
    sy: int
    sx: int
    ph: int
    pw: int
    dy: int
    dx: int


def conv2d_forward(x: Any, w: Any, b: Any | None, g: ConvGeometry) -> tuple[Any, Any]:
    """x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> (y (N, O, out_h, out_w), col)."""
    xp = get_array_module(x)
    kernels = kernels_for(xp)
    O, C, kh, kw = w.shape
    col = kernels.im2col(x, kh, kw, g.sy, g.sx, g.ph, g.pw, g.dy, g.dx)
    _, _, _, N, out_h, out_w = col.shape
    y = w.reshape(O, -1) @ col.reshape(C * kh * kw, -1)
    if b is not None:
        y += b[:, None]
    return y.reshape(O, N, out_h, out_w).transpose(1, 0, 2, 3), col


def conv2d_backward(dy: Any, x_shape: tuple[int, ...], w: Any, col: Any, g: ConvGeometry,
                    need_dx: bool = True) -> tuple[Any | None, Any, Any]:
    """dy: (N, O, out_h, out_w) -> (dx (N, C, H, W) or None, dW (O, C, kh, kw), db (O,))."""
    xp = get_array_module(dy)
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    dy_mat = xp.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(O, -1)
    col_mat = col.reshape(C * kh * kw, -1)
    dw = (dy_mat @ col_mat.T).reshape(w.shape)
    db = dy_mat.sum(axis=1)
    dx = None
    if need_dx:
        dcol = (w.reshape(O, -1).T @ dy_mat).reshape(col.shape)
        dx = kernels_for(xp).col2im(dcol, H, W, g.sy, g.sx, g.ph, g.pw, g.dy, g.dx)
    return dx, dw, db
