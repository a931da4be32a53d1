"""The CUDA plans: a kernel function's arguments -> the ``Launch`` CuPy runs.

``plan_<kernel>(...)`` takes the kernel function's arguments (cpu.py's
signature) but reads only ``.shape``, ``.ndim``, ``.strides`` and ``.dtype``
of the arrays (and ``.flags`` of those updated in place), picks the 32- or 64-bit instantiation
(launch.index_dtype) and returns a ``Launch``. Plans need no CuPy, so the CPU
emulation launches exactly what CuPy does.

A plan trusts its arguments: call it through dualconv.kernels, whose dispatch
point runs checks.py once before any twin. A plan given unchecked input can
describe a launch that reads out of bounds. Only what the CUDA twin alone
requires is refused here: arrays updated in place must be C-contiguous, and
softmax_cross_entropy's kernel reads int64 labels (cuda.softmax_cross_entropy
converts them).

Memory orders: images are read through their strides (batch-first or
batch-last cost no copy) and written batch-last (C, H, W, N); columns are
written (C, kh, kw, out_h, out_w, N); outputs come back as the (N, C, H, W) and
(C, kh, kw, N, out_h, out_w) views that cpu.py returns.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from ..shapes import Window
from .launch import Input, Launch, Output, as_laid_out, element_strides, index_dtype, launch_1d, magic
from .plan_cache import per_call
from .layout import (BATCH_FIRST, BATCH_LAST, COLUMNS_BATCH_FIRST, COLUMNS_BATCH_LAST, batch_first_axes,
                     batch_last_axes)

FLOAT_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
"""The float dtypes the kernels are instantiated for, and their C names."""

INDEX_TYPES = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}
"""The index types: 32-bit whenever every index fits (launch.index_dtype)."""

POOL_SIDES = (0, 2)
"""Pooling kernels are compiled for any window (0) and for 2x2 (2, unrolled)."""


# ---------------------------------------------------------------- window kernels

def _window_launch(kernel: str, dtype: np.dtype, total: int, arrays: Sequence[Any],
                   image: Input | None, nchw: tuple[int, int, int, int], win: Window,
                   out: tuple[int, int], extents: Sequence[int], side: int | None = None) -> Launch:
    """A window kernel's launch: its arrays, then DC_WINDOW_PARAMS (common.cuh)."""
    N, C, H, W = nchw
    padded = C * (H + 2 * win.ph + win.kh * win.dy) * (W + 2 * win.pw + win.kw * win.dx) * N
    itype = index_dtype([*extents, padded], total)
    strides = element_strides(image) if image is not None else (0, 0, 0, 0)
    divisors = (N, H, W, *out, win.kh, win.kw, win.sy, win.sx)
    # An empty batch runs no thread: any divisor will do for it.
    magics = [magic(max(d, 1)) if itype == np.int32 else np.uint64(0) for d in divisors]
    scalars = [itype.type(v) for v in (total, N, C, H, W, *win, *out, *strides)]
    template = f"{FLOAT_TYPES[dtype]}, {INDEX_TYPES[itype]}" + ("" if side is None else f", {side}")
    return launch_1d(f"{kernel}<{template}>", total, (*arrays, *scalars, *magics))


def _side(win: Window) -> int:
    """The compiled pooling window for win: 2 for 2x2, else 0 (any)."""
    return win.kh if win.kh == win.kw and win.kh in POOL_SIDES else 0


def plan_im2col(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w); one thread per col element."""
    N, C, H, W = x.shape
    out = win.out_size(H, W)
    image = as_laid_out(x, BATCH_LAST)
    col = Output((C, win.kh, win.kw, *out, N), np.dtype(x.dtype), COLUMNS_BATCH_FIRST)
    total = C * win.kh * win.kw * out[0] * out[1] * N
    return _window_launch("im2col", col.dtype, total, (image, col), image, (N, C, H, W), win,
                          out, [N * C * H * W])


def plan_col2im(col: Any, H: int, W: int, win: Window) -> Launch:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W); one thread per pixel."""
    C, _, _, N, _, _ = col.shape
    x = Output((C, H, W, N), np.dtype(col.dtype), BATCH_FIRST)
    return _window_launch("col2im", x.dtype, C * H * W * N, (Input(col, COLUMNS_BATCH_LAST), x),
                          None, (N, C, H, W), win, win.out_size(H, W), [int(np.prod(col.shape))])


def plan_max_pool_forward(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> y, argmax (int32): (N, C, out_h, out_w); one thread per output."""
    N, C, H, W = x.shape
    out = win.out_size(H, W)
    image = as_laid_out(x, BATCH_LAST)
    y = Output((C, *out, N), np.dtype(x.dtype), BATCH_FIRST)
    argmax = Output((C, *out, N), np.dtype(np.int32), BATCH_FIRST)
    return _window_launch("max_pool_forward", y.dtype, C * out[0] * out[1] * N, (image, y, argmax),
                          image, (N, C, H, W), win, out, [N * C * H * W], _side(win))


def plan_max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Launch:
    """gy, argmax (int32): (N, C, out_h, out_w) -> gx: (N, C, H, W); one thread per pixel."""
    N, C = gy.shape[:2]
    out = win.out_size(H, W)
    grad = as_laid_out(gy, BATCH_LAST)
    gx = Output((C, H, W, N), np.dtype(gy.dtype), BATCH_FIRST)
    return _window_launch("max_pool_backward", gx.dtype, C * H * W * N,
                          (grad, Input(argmax, BATCH_LAST), gx), grad, (N, C, H, W), win, out,
                          [N * C * out[0] * out[1]], _side(win))


def plan_avg_pool_forward(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); one thread per output."""
    N, C, H, W = x.shape
    out = win.out_size(H, W)
    image = as_laid_out(x, BATCH_LAST)
    y = Output((C, *out, N), np.dtype(x.dtype), BATCH_FIRST)
    return _window_launch("avg_pool_forward", y.dtype, C * out[0] * out[1] * N, (image, y), image,
                          (N, C, H, W), win, out, [N * C * H * W], _side(win))


def plan_avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Launch:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W); one thread per pixel."""
    N, C = gy.shape[:2]
    out = win.out_size(H, W)
    grad = as_laid_out(gy, BATCH_LAST)
    gx = Output((C, H, W, N), np.dtype(gy.dtype), BATCH_FIRST)
    return _window_launch("avg_pool_backward", gx.dtype, C * H * W * N, (grad, gx), grad,
                          (N, C, H, W), win, out, [N * C * out[0] * out[1]], _side(win))


# ---------------------------------------------------------------- fused kernels

def _kernel_scalars(dtype: np.dtype, values: Sequence[float | bool | np.int32]) -> tuple[Any, ...]:
    """Values as the fused kernels take them: the arrays' float type, except bools and
    np.int32 (C ints)."""
    return tuple(np.int32(v) if isinstance(v, (bool, np.int32)) else dtype.type(v) for v in values)


def _elementwise(kernel: str, arrays: dict[str, Any],
                 scalars: Sequence[float | bool | np.int32]) -> Launch:
    """A fused update in place, one thread per element, of arrays of one shape and
    float dtype. The gradient g is only read (laid out C-contiguous if it is not);
    the others must be C-contiguous already, since a copy would lose the update.
    Scalars become the arrays' float type, except bools and np.int32 (C ints)."""
    args = []
    for name, a in arrays.items():
        if name == "g":
            args.append(Input(a, tuple(range(a.ndim))))
        elif a.flags.c_contiguous:
            args.append(a)
        else:
            raise ValueError(f"{kernel}: {name} must be C-contiguous (it is updated in place)")
    first = next(iter(arrays.values()))
    dtype = np.dtype(first.dtype)
    n = int(np.prod(first.shape, dtype=np.int64))
    itype = index_dtype([n], n)
    return launch_1d(f"{kernel}<{FLOAT_TYPES[dtype]}, {INDEX_TYPES[itype]}>", n,
                     (*args, itype.type(n), *_kernel_scalars(dtype, scalars)))


def _sgd_tail(w: Any, g: Any, v: Any | None, lr: float, momentum: float, weight_decay: float,
              nesterov: bool) -> tuple[Any, ...]:
    """sgd_update's per-call arguments: lr, momentum, weight_decay in w's dtype, nesterov
    (an int), as _kernel_scalars makes them (written out: this runs once per launch)."""
    real = w.dtype.type
    return real(lr), real(momentum), real(weight_decay), np.int32(bool(nesterov))


@per_call("lr", "momentum", "weight_decay", "nesterov", tail=_sgd_tail)
def plan_sgd_update(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
                    weight_decay: float, nesterov: bool) -> Launch:
    """Updates w, and the velocity v unless momentum is 0 (v may then be None), in place."""
    arrays = dict(w=w, g=g, v=w if v is None else v)  # v is not read when momentum is 0
    return _elementwise("sgd_update", arrays, _sgd_tail(w, g, v, lr, momentum, weight_decay,
                                                         nesterov))


def _adam_tail(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float, eps: float,
               weight_decay: float, step: int) -> tuple[Any, ...]:
    """adam_update's per-call arguments, in w's dtype: lr, b1, b2, 1 - b1, 1 - b2, the bias
    corrections 1 - b1^step and 1 - b2^step, eps, weight_decay (as _kernel_scalars makes
    them, written out)."""
    real = w.dtype.type
    return (real(lr), real(b1), real(b2), real(1 - b1), real(1 - b2), real(1 - b1 ** step),
            real(1 - b2 ** step), real(eps), real(weight_decay))


@per_call("lr", "b1", "b2", "eps", "weight_decay", "step", tail=_adam_tail)
def plan_adam_update(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                     eps: float, weight_decay: float, step: int) -> Launch:
    """Updates w and the moments m, v in place for Adam's step ``step`` (from 1)."""
    return _elementwise("adam_update", dict(w=w, g=g, m=m, v=v),
                        _adam_tail(w, g, m, v, lr, b1, b2, eps, weight_decay, step))


def _sgd_guarded_tail(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                      verdict: Any, code: int, lr: float, momentum: float, weight_decay: float,
                      nesterov: bool) -> tuple[Any, ...]:
    """sgd_update_guarded's per-call arguments: sgd_update's, then the step code."""
    real = w.dtype.type
    return real(lr), real(momentum), real(weight_decay), np.int32(bool(nesterov)), np.int32(code)


@per_call("code", "lr", "momentum", "weight_decay", "nesterov", tail=_sgd_guarded_tail)
def plan_sgd_update_guarded(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                            verdict: Any, code: int, lr: float, momentum: float,
                            weight_decay: float, nesterov: bool) -> Launch:
    """sgd_update under fit's divergence guard: skips unless verdict > code, first
    copies w (and v) into w_last (v_last), flags a non-finite result (optimizers.cu)."""
    v, v_last = (w, w_last) if v is None else (v, v_last)  # neither is touched when momentum is 0
    arrays = dict(w=w, g=g, v=v, w_last=w_last, v_last=v_last)
    return _with_verdict(_elementwise("sgd_update_guarded", arrays,
                                      _sgd_tail(w, g, v, lr, momentum, weight_decay, nesterov)),
                         len(arrays), verdict, code)


def _adam_guarded_tail(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                       verdict: Any, code: int, lr: float, b1: float, b2: float, eps: float,
                       weight_decay: float, step: int) -> tuple[Any, ...]:
    """adam_update_guarded's per-call arguments: adam_update's, then the step code."""
    return (*_adam_tail(w, g, m, v, lr, b1, b2, eps, weight_decay, step), np.int32(code))


@per_call("code", "lr", "b1", "b2", "eps", "weight_decay", "step", tail=_adam_guarded_tail)
def plan_adam_update_guarded(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any,
                             v_last: Any, verdict: Any, code: int, lr: float, b1: float,
                             b2: float, eps: float, weight_decay: float, step: int) -> Launch:
    """adam_update_guarded under fit's divergence guard (see plan_sgd_update_guarded)."""
    arrays = dict(w=w, g=g, m=m, v=v, w_last=w_last, m_last=m_last, v_last=v_last)
    return _with_verdict(_elementwise("adam_update_guarded", arrays,
                                      _adam_tail(w, g, m, v, lr, b1, b2, eps, weight_decay, step)),
                         len(arrays), verdict, code)


def _with_verdict(launch: Launch, arrays: int, verdict: Any, code: int) -> Launch:
    """``launch`` with the guard's verdict after its arrays and its step code last."""
    args = launch.args
    return dataclasses.replace(launch, args=(*args[:arrays], verdict, *args[arrays:],
                                             np.int32(code)))


@per_call("code", tail=lambda loss, verdict, code: (np.int32(code),))
def plan_flag_nonfinite_loss(loss: Any, verdict: Any, code: int) -> Launch:
    """loss: a float scalar (0-d); sets verdict to code when it is NaN or infinite and
    no earlier step failed. One thread."""
    return launch_1d(f"flag_nonfinite_loss<{FLOAT_TYPES[np.dtype(loss.dtype)]}>", 1,
                     (loss, verdict, np.int32(code)))


def plan_softmax_cross_entropy(z: Any, labels: Any) -> Launch:
    """z: (N, C) logits, labels: int64 (N,) -> loss (N,), gz (N, C); one thread per row."""
    if np.dtype(labels.dtype) != np.int64:
        raise TypeError(f"softmax_cross_entropy: the kernel reads int64 labels, got "
                        f"{np.dtype(labels.dtype)} (softmax_cross_entropy() converts them)")
    N, C = z.shape
    dtype = np.dtype(z.dtype)
    itype = index_dtype([N * C], N)
    return launch_1d(f"softmax_cross_entropy<{FLOAT_TYPES[dtype]}, long long, "
                     f"{INDEX_TYPES[itype]}>", N,
                     (Input(z, (0, 1)), Input(labels, (0,)), Output((N,), dtype),
                      Output((N, C), dtype), itype.type(N), itype.type(C)))


def _dropout_tail(x: Any, key: int, p: float, first_sample: int) -> tuple[Any, ...]:
    """dropout_forward's per-call arguments: the first sample pair, the key's halves, the
    16-bit drop threshold of p, and the scale 1 / (1 - p) in x's dtype."""
    threshold = min(2**16 - 1, round(p * 2**16))
    return (np.uint32(first_sample // 2), np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32),
            np.uint32(threshold), np.dtype(x.dtype).type(1.0 / (1.0 - p)))


@per_call("key", "p", "first_sample", tail=_dropout_tail)
def plan_dropout_forward(x: Any, key: int, p: float, first_sample: int) -> Launch:
    """x: (N, ...) -> y, mask shaped like x and stored in x's order: batch-first where x is
    C-contiguous (a Dense layer's output), else batch-last (features, N), x read as that
    (a copy when it is stored in neither); one thread per element."""
    N, features = x.shape[0], tuple(x.shape[1:])
    F = int(np.prod(features, dtype=np.int64))
    dtype = np.dtype(x.dtype)
    total = F * N
    itype = index_dtype([total], total)
    name = f"dropout_forward<{FLOAT_TYPES[dtype]}, {INDEX_TYPES[itype]}>"
    sizes = (itype.type(total), itype.type(N), np.uint32(F))
    tail = _dropout_tail(x, key, p, first_sample)
    if Input(x, tuple(range(x.ndim))).laid_out:
        return launch_1d(name, total, (x, Output(tuple(x.shape), dtype), Output(tuple(x.shape), dtype),
                                       *sizes, np.int32(1), *tail))
    back = batch_first_axes(x.ndim)
    return launch_1d(name, total, (Input(x, batch_last_axes(x.ndim)), Output((*features, N), dtype, back),
                                   Output((*features, N), dtype, back), *sizes, np.int32(0), *tail))


PLANS: dict[str, Callable[..., Launch]] = {
    "im2col": plan_im2col,
    "col2im": plan_col2im,
    "max_pool_forward": plan_max_pool_forward,
    "max_pool_backward": plan_max_pool_backward,
    "avg_pool_forward": plan_avg_pool_forward,
    "avg_pool_backward": plan_avg_pool_backward,
    "sgd_update": plan_sgd_update,
    "adam_update": plan_adam_update,
    "softmax_cross_entropy": plan_softmax_cross_entropy,
    "sgd_update_guarded": plan_sgd_update_guarded,
    "adam_update_guarded": plan_adam_update_guarded,
    "flag_nonfinite_loss": plan_flag_nonfinite_loss,
    "dropout_forward": plan_dropout_forward,
}
"""Kernel name -> its plan (same arguments as the kernel function; trusts them:
call it through dualconv.kernels)."""
