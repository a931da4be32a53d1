"""Max-pool on windows that tile the image, through the compiled kernels
(kernels/cpu_max_pool.c, loaded by native.py): the fast path of cpu.py's
max_pool_forward and max_pool_backward, with the same bits.

Each function returns None where the compiled kernels do not apply (windows that
overlap, pad or dilate; a dtype other than float32 and float64; no library), and
cpu.py's NumPy code runs instead.
"""
from __future__ import annotations

import numpy as np

from ..shapes import Window
from .native import SUFFIX, library


def tiles(win: Window) -> bool:
    """Whether win's windows tile the image: stride = kernel, no padding, no dilation."""
    return (win.sy, win.sx, win.ph, win.pw, win.dy, win.dx) == (win.kh, win.kw, 0, 0, 1, 1)


def forward(xb: np.ndarray, win: Window) -> tuple[np.ndarray, np.ndarray] | None:
    """xb: (C, H, W, N) batch-last, C-contiguous -> (y, argmax), both (C, out_h, out_w, N)
    C-contiguous, argmax int32 (the rule of cpu.max_pool_forward); None where it does
    not apply."""
    lib = library()
    suffix = SUFFIX.get(xb.dtype)
    if lib is None or suffix is None or not tiles(win) or not xb.flags.c_contiguous:
        return None
    C, H, W, N = xb.shape
    y = np.empty((C, H // win.kh, W // win.kw, N), dtype=xb.dtype)
    argmax = np.empty(y.shape, dtype=np.int32)
    getattr(lib, f"max_pool_tiled_forward_{suffix}")(
        xb.ctypes.data, y.ctypes.data, argmax.ctypes.data, C, H, W, N, win.kh, win.kw)
    return y, argmax


def backward(gyb: np.ndarray, argmaxb: np.ndarray, H: int, W: int, win: Window) -> np.ndarray | None:
    """gyb, argmaxb: (C, out_h, out_w, N) batch-last views -> gx: (C, H, W, N)
    C-contiguous (the rule of cpu.max_pool_backward: 0 + gy where the pixel won its
    window, +0.0 elsewhere and past the last whole window); None where it does not apply."""
    lib = library()
    suffix = SUFFIX.get(gyb.dtype)
    if lib is None or suffix is None or not tiles(win) or argmaxb.dtype != np.int32:
        return None
    g = np.ascontiguousarray(gyb)
    winner = np.ascontiguousarray(argmaxb)
    C, _, _, N = g.shape
    gx = np.empty((C, H, W, N), dtype=g.dtype)
    getattr(lib, f"max_pool_tiled_backward_{suffix}")(
        g.ctypes.data, winner.ctypes.data, gx.ctypes.data, C, H, W, N, win.kh, win.kw)
    return gx
