"""The convolution through the compiled kernels (kernels/cpu_conv.c, loaded by native.py):
the forward, the weight gradient and the input gradient as direct sums over the
batch-last image, the fast path of cpu_conv.py's conv2d_forward and conv2d_backward.

The C kernels take whole register blocks, sized for the build's vector registers
(``blocks``: AVX-512's, or AVX2's at half the size): a batch of a multiple of a block's
samples, and for the forward a multiple of its output channels (the input gradient: of
its input channels). Other sizes are padded here with zero samples and zero weights,
whose outputs are computed and dropped.
Each function returns None where the compiled kernels do not apply (a dtype other than
float32 and float64, mixed dtypes, a batch under half a register block's samples, no
library, a build with neither AVX-512 nor AVX2), and cpu_conv.py's products run instead.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Any, NamedTuple

import numpy as np

from ..shapes import Window
from .cpu import padded_batch_last
from .layout import batch_first, batch_last
from .native import SUFFIX
from .native import library as _library

MIN_WEIGHT_ROWS = 48
"""The fewest rows of gw.T (C*kh*kw) for which the compiled weight gradient runs. Below
it, transposing gy costs more than the kernel saves (benchmarks/README.md, "Compiled CPU
kernels")."""


class Blocks(NamedTuple):
    """This build's register blocks (kernels/cpu_conv.c, conv_blocks): the bytes of a
    vector (64 with AVX-512, 32 with AVX2), and the output channels of the forward's
    block, the input channels of the input gradient's, the rows of gw.T of the weight
    gradient's."""
    vector_bytes: int
    out_channels: int
    in_channels: int
    weight_rows: int

    def samples(self, dtype: np.dtype) -> int:
        """Samples per register block: two vectors of ``dtype``'s numbers."""
        return 2 * self.vector_bytes // dtype.itemsize


def library():
    """The compiled kernels where this build's vectors fit the convolution's register blocks
    (AVX-512 or AVX2: kernels/cpu_conv.c, conv_blocks), else None: the GEMM twin runs."""
    lib = _library()
    return lib if lib is not None and blocks(lib) is not None else None


@functools.cache
def blocks(lib) -> Blocks | None:
    """lib's register blocks, asked once per library; None where its build has none that
    fit (neither AVX-512 nor AVX2)."""
    out = (ctypes.c_ssize_t * 4)()
    return Blocks(*out) if lib.conv_blocks(out) else None


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _compiled(N: int, *arrays: np.ndarray | None) -> tuple[Any, Blocks, int] | None:
    """(the library, its blocks, N padded to whole sample blocks) where the compiled
    kernels take a batch of N samples and these arrays (None for an absent bias): a
    library whose blocks fit, one dtype among SUFFIX's, and N at least half of its padded
    size (below that the zero samples cost the compiled sums more than the GEMM twin
    takes); else None."""
    lib = library()
    dtype = arrays[0].dtype
    if lib is None or dtype not in SUFFIX or any(a is not None and a.dtype != dtype for a in arrays):
        return None
    sizes = blocks(lib)
    n_padded = _round_up(N, sizes.samples(dtype))
    return (lib, sizes, n_padded) if N > 0 and 2 * N >= n_padded else None


def forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window) -> np.ndarray | None:
    """x (N, C, H, W), w (O, C, kh, kw), b (O,) or None -> y (N, O, out_h, out_w), stored
    batch-last (the contract of cpu_conv.conv2d_forward); None where it does not apply."""
    compiled = _compiled(x.shape[0], x, w, b)
    if compiled is None:
        return None
    lib, sizes, n_padded = compiled
    dtype = x.dtype
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    out_h, out_w = win.out_size(H, W)
    o_padded = _round_up(O, sizes.out_channels)
    xb = _padded_batch_last(x, n_padded, win.ph, win.pw)
    weights = _padded_rows(w, o_padded)
    bias = None if b is None else _padded_rows(b, o_padded)
    y = np.empty((o_padded, out_h, out_w, n_padded), dtype=dtype)
    getattr(lib, f"conv_forward_{SUFFIX[dtype]}")(
        xb.ctypes.data, weights.ctypes.data, None if bias is None else bias.ctypes.data, y.ctypes.data,
        C, xb.shape[1], xb.shape[2], n_padded, o_padded, kh, kw, win.sy, win.sx, win.dy, win.dx)
    if n_padded != N:
        y = np.ascontiguousarray(y[..., :N])
    return batch_first(y[:O])


def _padded_batch_last(a: np.ndarray, n_padded: int, ph: int = 0, pw: int = 0) -> np.ndarray:
    """a (N, C, H, W) -> a C-contiguous (C, H + 2ph, W + 2pw, n_padded) batch-last copy, zeros
    around it and in the samples past N; a's own batch-last storage where nothing is added
    (cpu.padded_batch_last). For an input (padded by its window) and for gy (not padded)."""
    N, C, H, W = a.shape
    if n_padded == N:
        return padded_batch_last(a, ph, pw)
    out = np.zeros((C, H + 2 * ph, W + 2 * pw, n_padded), dtype=a.dtype)
    out[:, ph:ph + H, pw:pw + W, :N] = batch_last(a)
    return out


def _padded_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """a C-contiguous, with zero rows added up to ``rows`` (a itself where it needs neither)."""
    if a.shape[0] == rows:
        return np.ascontiguousarray(a)
    out = np.zeros((rows, *a.shape[1:]), dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


def weight_gradient(gy: np.ndarray, x: np.ndarray, w: np.ndarray, win: Window) -> np.ndarray | None:
    """gy (N, O, out_h, out_w) and the forward's input x (N, C, H, W) -> gw (O, C, kh, kw):
    each sum over (oy, ox, n) in that order, one multiply-add each, an order the GEMM
    twin's BLAS product may use (within its rounding bound). The kernel holds output
    channels in vectors: O under a vector's numbers (with AVX-512 16 floats, 8 doubles)
    takes half-width vectors, a larger O is padded to whole ones with zero channels. None where
    it does not apply: O not a multiple of half a vector's numbers (padding would waste
    more than the GEMM twin loses), C*kh*kw under MIN_WEIGHT_ROWS."""
    compiled = _compiled(gy.shape[0], gy, x, w)
    if compiled is None:
        return None
    lib, sizes, n_padded = compiled
    dtype = gy.dtype
    lanes = sizes.samples(dtype) // 2
    if w.shape[0] % (lanes // 2) or w[0].size < MIN_WEIGHT_ROWS:
        return None
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    width, o_padded = ("_half", O) if O < lanes else ("", _round_up(O, lanes))
    xb = _padded_batch_last(x, n_padded, win.ph, win.pw)
    gy_mat = _padded_batch_last(gy, n_padded).reshape(O, -1)
    gyt = np.zeros((gy_mat.shape[1], o_padded), dtype=dtype)  # gy transposed
    gyt[:, :O] = gy_mat.T
    gw_t = np.empty((C * kh * kw, o_padded), dtype=dtype)
    getattr(lib, f"conv_weight_gradient_{SUFFIX[dtype]}{width}")(
        xb.ctypes.data, gyt.ctypes.data, gw_t.ctypes.data, C, xb.shape[1], xb.shape[2], n_padded, o_padded,
        kh, kw, win.sy, win.sx, win.dy, win.dx)
    return np.ascontiguousarray(gw_t[:, :O].T).reshape(w.shape)


def input_gradient(gy: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...], win: Window) -> np.ndarray | None:
    """gy (N, O, out_h, out_w) and w (O, C, kh, kw) -> gx (N, C, H, W) for an input of
    x_shape, stored batch-last: for each pixel, over (ky, kx) in order, the term sum over
    o of w * gy (from 0, o in order) added to a sum that starts at +0.0, col2im's order of
    the GEMM twin's terms (cpu_conv.conv2d_input_gradient). None where it does not apply."""
    compiled = _compiled(gy.shape[0], gy, w)
    if compiled is None:
        return None
    lib, sizes, n_padded = compiled
    dtype = gy.dtype
    N, C, H, W = x_shape
    O, _, kh, kw = w.shape
    c_padded = _round_up(C, sizes.in_channels)
    Hp, Wp = H + 2 * win.ph, W + 2 * win.pw
    gyb = _padded_batch_last(gy, n_padded)
    wt = np.zeros((kh, kw, c_padded, O), dtype=dtype)
    wt[:, :, :C] = w.transpose(2, 3, 1, 0)
    gxb = np.empty((c_padded, Hp, Wp, n_padded), dtype=dtype)
    getattr(lib, f"conv_input_gradient_{SUFFIX[dtype]}")(
        gyb.ctypes.data, wt.ctypes.data, gxb.ctypes.data, c_padded, Hp, Wp, n_padded, O,
        kh, kw, win.sy, win.sx, win.dy, win.dx)
    gxb = gxb[:C, win.ph:win.ph + H, win.pw:win.pw + W, :N]
    return batch_first(gxb if gxb.flags.c_contiguous else np.ascontiguousarray(gxb))
