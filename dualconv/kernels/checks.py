"""The one set of input checks for the kernels, shared by both backends.

``dualconv.kernels`` runs the check named like the kernel (``im2col``,
``max_pool_forward``, ...; same arguments) once, before it dispatches, so the
NumPy and CUDA twins accept and reject exactly the same inputs, with the same
messages. Everything behind the dispatch point trusts its arguments: the twins
(reference.py, the cpu*.py and cuda*.py modules) and the CUDA plans
(cuda_plans.py), which would describe an out-of-bounds launch for a shape that
was never checked.

The helpers take ``who``, the name that starts every message: a kernel name
here, a layer name when a layer calls them (layers/conv.py, layers/pooling.py).
Checks read only ``.shape``, ``.dtype`` and ``.ndim``.

A step calls each kernel with the shapes of the step before, so the dispatch point
runs a kernel's whole check once per signature of its arguments (signatures.py),
leaving out the per-call numbers PER_CALL names (a learning rate, a step, a key): a
signature seen before passed every check that reads it, so only the check of those
numbers (PER_CALL's function) runs again, with the same messages.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..shapes import Window

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
"""The dtypes every kernel takes, on both backends (CUDA instantiates these two)."""


def check_float(a: Any, what: str, who: str) -> np.dtype:
    """a's dtype, if it is float32 or float64; TypeError otherwise."""
    dtype = np.dtype(a.dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{who}: {what} must be float32 or float64, got {dtype}")
    return dtype


def check_window(win: Window, who: str) -> None:
    """Kernel size, stride and dilation at least 1; padding at least 0."""
    for name in ("kh", "kw", "sy", "sx", "dy", "dx"):
        if int(getattr(win, name)) < 1:
            raise ValueError(f"{who}: {name} must be >= 1, got {getattr(win, name)}")
    if win.ph < 0 or win.pw < 0:
        raise ValueError(f"{who}: padding must be >= 0, got {(win.ph, win.pw)}")


def check_fits(H: int, W: int, win: Window, who: str) -> tuple[int, int]:
    """(out_h, out_w) for an H x W input; ValueError when the output would be empty,
    which is exactly when the dilated kernel is larger than the padded input."""
    padded = (H + 2 * win.ph, W + 2 * win.pw)
    if win.span[0] > padded[0] or win.span[1] > padded[1]:
        dilated = f" (dilated span {win.span})" if (win.dy, win.dx) != (1, 1) else ""
        raise ValueError(
            f"{who}: kernel {(win.kh, win.kw)}{dilated} is larger than the padded input "
            f"{padded} from input {(H, W)} with padding {(win.ph, win.pw)}; "
            f"the window does not fit, so the output would be empty")
    return win.out_size(H, W)


def check_shape(a: Any, expected: tuple[int, ...], what: str, who: str) -> None:
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{who}: {what} must have shape {tuple(expected)}, got {tuple(a.shape)}")


def _image(x: Any, win: Window, who: str) -> tuple[int, int]:
    check_float(x, "x", who)
    if x.ndim != 4:
        raise ValueError(f"{who}: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    check_window(win, who)
    return check_fits(x.shape[2], x.shape[3], win, who)


def _pooled_grad(gy: Any, H: int, W: int, win: Window, who: str) -> tuple[int, int]:
    check_float(gy, "gy", who)
    check_window(win, who)
    out_h, out_w = check_fits(H, W, win, who)
    check_shape(gy, (*gy.shape[:2], out_h, out_w), "gy", who)
    return out_h, out_w


# One check per kernel, with the kernel's own arguments; each returns (out_h, out_w).

def im2col(x: Any, win: Window) -> tuple[int, int]:
    return _image(x, win, "im2col")


def col2im(col: Any, H: int, W: int, win: Window) -> tuple[int, int]:
    who = "col2im"
    check_float(col, "col", who)
    if col.ndim != 6:
        raise ValueError(f"{who}: col must be 6-D (C, kh, kw, N, out_h, out_w), "
                         f"got shape {tuple(col.shape)}")
    check_window(win, who)
    out = check_fits(H, W, win, who)
    C, kh, kw, N, out_h, out_w = col.shape
    if (kh, kw) != (win.kh, win.kw):
        raise ValueError(f"{who}: col has kh, kw = {(kh, kw)} but the window has {(win.kh, win.kw)}")
    if (out_h, out_w) != out:
        raise ValueError(f"{who}: col has out_h, out_w = {(out_h, out_w)} but image {(H, W)} "
                         f"with this window gives {out}")
    return out


def max_pool_forward(x: Any, win: Window) -> tuple[int, int]:
    return _image(x, win, "max_pool_forward")


def max_pool_values(x: Any, win: Window) -> tuple[int, int]:
    return _image(x, win, "max_pool_values")


def max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> tuple[int, int]:
    who = "max_pool_backward"
    if np.dtype(argmax.dtype) != np.int32:
        raise TypeError(f"{who}: argmax must be int32, got {np.dtype(argmax.dtype)}")
    out = _pooled_grad(gy, H, W, win, who)
    check_shape(argmax, gy.shape, "argmax", who)
    return out


def avg_pool_forward(x: Any, win: Window) -> tuple[int, int]:
    return _image(x, win, "avg_pool_forward")


def avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> tuple[int, int]:
    return _pooled_grad(gy, H, W, win, "avg_pool_backward")


# The fused updates and loss: one float dtype and one shape for every array.

def _same(arrays: dict[str, Any], who: str) -> None:
    first_name, first = next(iter(arrays.items()))
    dtype = check_float(first, first_name, who)
    for name, a in arrays.items():
        if a is None:
            continue
        check_shape(a, first.shape, name, who)
        if np.dtype(a.dtype) != dtype:
            raise TypeError(f"{who}: {name} must be {dtype} like {first_name}, "
                            f"got {np.dtype(a.dtype)}")


def _sgd_values(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
                weight_decay: float, nesterov: bool) -> None:
    if v is None and momentum != 0:
        raise ValueError("sgd_update: momentum needs a velocity array v")


def sgd_update(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
               weight_decay: float, nesterov: bool) -> None:
    _sgd_values(w, g, v, lr, momentum, weight_decay, nesterov)
    _same(dict(w=w, g=g, v=v), "sgd_update")


def _adam_values(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                 eps: float, weight_decay: float, step: int) -> None:
    if int(step) < 1:
        raise ValueError(f"adam_update: step counts from 1, got {step}")


def adam_update(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                eps: float, weight_decay: float, step: int) -> None:
    _adam_values(w, g, m, v, lr, b1, b2, eps, weight_decay, step)
    _same(dict(w=w, g=g, m=m, v=v), "adam_update")


def _verdict(verdict: Any, who: str) -> None:
    """The divergence guard's verdict: one int32, updated in place."""
    if np.dtype(verdict.dtype) != np.int32 or tuple(verdict.shape) != (1,):
        raise TypeError(f"{who}: verdict must be an int32 array of shape (1,), got "
                        f"{np.dtype(verdict.dtype)} {tuple(verdict.shape)}")


def _code(code: int, who: str) -> None:
    """The divergence guard's step code: 2 * step >= 2."""
    if not 2 <= int(code) < 2**31 - 2 or int(code) % 2:
        raise ValueError(f"{who}: code must be 2 * step for a step in [1, 2^30), got {code}")


def _sgd_guarded_values(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                        verdict: Any, code: int, lr: float, momentum: float,
                        weight_decay: float, nesterov: bool) -> None:
    # _sgd_values, then _code, written out: this runs on every call of a remembered signature
    if v is None and momentum != 0:
        raise ValueError("sgd_update: momentum needs a velocity array v")
    if not 2 <= int(code) < 2**31 - 2 or int(code) % 2:
        raise ValueError(f"sgd_update_guarded: code must be 2 * step for a step in [1, 2^30), "
                         f"got {code}")


def sgd_update_guarded(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                       verdict: Any, code: int, lr: float, momentum: float,
                       weight_decay: float, nesterov: bool) -> None:
    who = "sgd_update_guarded"
    if (v is None) != (v_last is None):
        raise ValueError(f"{who}: v and v_last go together (both None without momentum)")
    sgd_update(w, g, v, lr, momentum, weight_decay, nesterov)
    _same(dict(w=w, w_last=w_last, v_last=v_last), who)
    _verdict(verdict, who)
    _code(code, who)


def _adam_guarded_values(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                         verdict: Any, code: int, lr: float, b1: float, b2: float, eps: float,
                         weight_decay: float, step: int) -> None:
    # _adam_values, then _code, written out: this runs on every call of a remembered signature
    if int(step) < 1:
        raise ValueError(f"adam_update: step counts from 1, got {step}")
    if not 2 <= int(code) < 2**31 - 2 or int(code) % 2:
        raise ValueError(f"adam_update_guarded: code must be 2 * step for a step in [1, 2^30), "
                         f"got {code}")


def adam_update_guarded(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                        verdict: Any, code: int, lr: float, b1: float, b2: float, eps: float,
                        weight_decay: float, step: int) -> None:
    who = "adam_update_guarded"
    adam_update(w, g, m, v, lr, b1, b2, eps, weight_decay, step)
    _same(dict(w=w, w_last=w_last, m_last=m_last, v_last=v_last), who)
    _verdict(verdict, who)
    _code(code, who)


def _flag_values(loss: Any, verdict: Any, code: int) -> None:
    _code(code, "flag_nonfinite_loss")


def flag_nonfinite_loss(loss: Any, verdict: Any, code: int) -> None:
    who = "flag_nonfinite_loss"
    check_float(loss, "loss", who)
    if tuple(loss.shape) != ():
        raise ValueError(f"{who}: loss must be a scalar (0-d array), got shape {tuple(loss.shape)}")
    _verdict(verdict, who)
    _code(code, who)


def softmax_cross_entropy(z: Any, labels: Any) -> None:
    who = "softmax_cross_entropy"
    check_float(z, "z", who)
    if z.ndim != 2:
        raise ValueError(f"{who}: z must be 2-D (N, C), got shape {tuple(z.shape)}")
    check_shape(labels, z.shape[:1], "labels", who)
    if np.dtype(labels.dtype).kind not in "iu":
        raise TypeError(f"{who}: labels must be integers, got {np.dtype(labels.dtype)}")


def _dropout_values(x: Any, key: int, p: float, first_sample: int) -> None:
    who = "dropout_forward"
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{who}: p must be in [0, 1), got {p}")
    if not 0 <= key < 2**64:
        raise ValueError(f"{who}: the key must be a 64-bit unsigned integer, got {key}")
    if first_sample < 0 or first_sample % 2:
        raise ValueError(f"{who}: a part of a batch must start at an even sample, got {first_sample}")
    N = x.shape[0]
    features = int(np.prod(x.shape[1:], dtype=np.int64))
    if features + first_sample // 2 + (N + 1) // 2 >= 2**32:
        raise ValueError(f"{who}: at most 2**32 features and sample pairs together, got shape "
                         f"{tuple(x.shape)} from sample {first_sample}")


def dropout_forward(x: Any, key: int, p: float, first_sample: int) -> None:
    who = "dropout_forward"
    check_float(x, "x", who)
    if x.ndim < 1:
        raise ValueError(f"{who}: x must have a batch axis, got a 0-d array")
    _dropout_values(x, key, p, first_sample)


# The GEMM kernels: one float dtype for every array, shapes that multiply.

def _like(a: Any, dtype: np.dtype, what: str, first: str, who: str) -> None:
    """a has ``dtype`` (that of the array named ``first``); TypeError otherwise."""
    if np.dtype(a.dtype) != dtype:
        raise TypeError(f"{who}: {what} must be {dtype} like {first}, got {np.dtype(a.dtype)}")


def _conv_weight(w: Any, b: Any | None, C: int, dtype: np.dtype, first: str, win: Window,
                 who: str) -> None:
    """w: (O, C, kh, kw) of the window's kernel size, with O and C at least 1 (as Conv2D
    asks), b: (O,) or None, both of ``dtype`` (that of the array named ``first``)."""
    _like(w, dtype, "w", first, who)
    if w.ndim != 4 or w.shape[1] != C or tuple(w.shape[2:]) != (win.kh, win.kw):
        raise ValueError(f"{who}: w must have shape (O, {C}, {win.kh}, {win.kw}), "
                         f"got {tuple(w.shape)}")
    if w.shape[0] == 0 or C == 0:
        raise ValueError(f"{who}: w must have at least one output and one input channel, "
                         f"got shape {tuple(w.shape)}")
    if b is not None:
        _like(b, dtype, "b", first, who)
        check_shape(b, w.shape[:1], "b", who)


def conv2d_forward(x: Any, w: Any, b: Any | None, win: Window) -> tuple[int, int]:
    who = "conv2d_forward"
    out = _image(x, win, who)
    _conv_weight(w, b, x.shape[1], np.dtype(x.dtype), "x", win, who)
    return out


def conv2d_backward(gy: Any, saved: Any, w: Any, win: Window, need_gx: bool,
                    need_gb: bool) -> tuple[int, int]:
    who = "conv2d_backward"
    dtype = check_float(gy, "gy", who)
    if not isinstance(saved, tuple) or len(saved) != 2 or len(saved[0]) != 4:
        raise TypeError(f"{who}: saved must be the (x shape, kept) pair conv2d_forward returned")
    N, C, H, W = saved[0]
    check_window(win, who)
    out_h, out_w = check_fits(H, W, win, who)
    _conv_weight(w, None, C, dtype, "gy", win, who)
    check_shape(gy, (N, w.shape[0], out_h, out_w), "gy", who)
    return out_h, out_w


def _dense(x: Any, w: Any, who: str) -> np.dtype:
    """x: (N, in) float, w: (in, out) of x's dtype; returns the dtype."""
    dtype = check_float(x, "x", who)
    if x.ndim != 2:
        raise ValueError(f"{who}: x must be 2-D (N, in), got shape {tuple(x.shape)}")
    _like(w, dtype, "w", "x", who)
    if w.ndim != 2 or w.shape[0] != x.shape[1]:
        raise ValueError(f"{who}: w must have shape ({x.shape[1]}, out), got {tuple(w.shape)}")
    return dtype


def dense_forward(x: Any, w: Any, b: Any | None) -> None:
    who = "dense_forward"
    dtype = _dense(x, w, who)
    if b is not None:
        _like(b, dtype, "b", "x", who)
        check_shape(b, w.shape[1:], "b", who)


def dense_backward(gy: Any, x: Any, w: Any, need_gx: bool, need_gb: bool) -> None:
    who = "dense_backward"
    dtype = _dense(x, w, who)
    _like(gy, dtype, "gy", "x", who)
    check_shape(gy, (x.shape[0], w.shape[1]), "gy", who)


PER_CALL: dict[str, tuple[tuple[str, ...], Callable[..., None]]] = {
    "sgd_update": (("lr", "momentum", "weight_decay", "nesterov"), _sgd_values),
    "adam_update": (("lr", "b1", "b2", "eps", "weight_decay", "step"), _adam_values),
    "sgd_update_guarded": (("code", "lr", "momentum", "weight_decay", "nesterov"),
                           _sgd_guarded_values),
    "adam_update_guarded": (("code", "lr", "b1", "b2", "eps", "weight_decay", "step"),
                            _adam_guarded_values),
    "flag_nonfinite_loss": (("code",), _flag_values),
    "dropout_forward": (("key", "p", "first_sample"), _dropout_values),
}
"""Kernel -> (its per-call parameters, the check of their values alone, which the
kernel's check makes too). The others' checks read nothing that changes per call."""
