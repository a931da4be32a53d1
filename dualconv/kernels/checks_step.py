"""The input checks of a captured step's kernels (kernels/step.cu and the ``*_at``
variants), run once at the dispatch point, as checks.py does for the others.

A per-step value that the eager kernel takes as a number is here a device array
(a "scalar at"): ``lr_at`` (1,) and ``rates_at`` (3,) of the updated arrays' dtype,
``code_at``, ``step_at`` (1,) and ``key_at`` (2,) int32. Checks read shapes and
dtypes only; the values are on the device and are never read back.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import checks


def _at(a: Any, dtype: Any, size: int, what: str, who: str) -> None:
    """``a`` is a device value: a 1-D array of ``size`` elements of ``dtype``."""
    if not hasattr(a, "shape") or np.dtype(a.dtype) != np.dtype(dtype) or tuple(a.shape) != (size,):
        got = f"{np.dtype(a.dtype)} {tuple(a.shape)}" if hasattr(a, "shape") else type(a).__name__
        raise TypeError(f"{who}: {what} must be an array of shape ({size},) and dtype "
                        f"{np.dtype(dtype)} (a value on the device), got {got}")


def _verdict(verdict: Any, who: str) -> None:
    if np.dtype(verdict.dtype) != np.int32 or tuple(verdict.shape) != (1,):
        raise TypeError(f"{who}: verdict must be an int32 array of shape (1,), got "
                        f"{np.dtype(verdict.dtype)} {tuple(verdict.shape)}")


def step_begin(clock: Any, float_table: Any, int_table: Any, floats_now: Any, ints_now: Any) -> None:
    who = "step_begin"
    _at(clock, np.int32, 1, "clock", who)
    dtype = checks.check_float(float_table, "float_table", who)
    if float_table.ndim != 2 or int_table.ndim != 2 or float_table.shape[0] != int_table.shape[0]:
        raise ValueError(f"{who}: the tables must be 2-D (steps, width) with as many rows, got "
                         f"{tuple(float_table.shape)} and {tuple(int_table.shape)}")
    if np.dtype(int_table.dtype) != np.int32:
        raise TypeError(f"{who}: int_table must be int32, got {np.dtype(int_table.dtype)}")
    _at(floats_now, dtype, int(float_table.shape[1]), "floats_now", who)
    _at(ints_now, np.int32, int(int_table.shape[1]), "ints_now", who)
    for name, a in (("float_table", float_table), ("int_table", int_table)):
        if not a.flags.c_contiguous:
            raise ValueError(f"{who}: {name} must be C-contiguous")


def gather_rows(X: Any, y: Any, order: Any, step_at: Any, xb: Any, yb: Any) -> None:
    who = "gather_rows"
    dtype = checks.check_float(X, "X", who)
    if X.ndim < 1 or y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{who}: X must be (N, ...) and y (N,), got {tuple(X.shape)} and {tuple(y.shape)}")
    checks.check_shape(xb, (xb.shape[0], *X.shape[1:]), "xb", who)
    checks.check_shape(yb, xb.shape[:1], "yb", who)
    for name, a, want in (("xb", xb, dtype), ("y", y, np.int64), ("yb", yb, np.int64),
                          ("order", order, np.int64)):
        if np.dtype(a.dtype) != np.dtype(want):
            raise TypeError(f"{who}: {name} must be {np.dtype(want)}, got {np.dtype(a.dtype)}")
    if order.ndim != 1 or order.shape[0] < xb.shape[0]:
        raise ValueError(f"{who}: order must be 1-D with at least a batch ({xb.shape[0]}) of rows, "
                         f"got shape {tuple(order.shape)}")
    if not (xb.flags.c_contiguous and yb.flags.c_contiguous and y.flags.c_contiguous
            and order.flags.c_contiguous):
        raise ValueError(f"{who}: y, order, xb and yb must be C-contiguous")
    _at(step_at, np.int32, 1, "step_at", who)


def sgd_update_guarded_at(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                          verdict: Any, code_at: Any, lr_at: Any, momentum: float,
                          weight_decay: float, nesterov: bool) -> None:
    who = "sgd_update_guarded_at"
    checks.sgd_update_guarded(w, g, v, w_last, v_last, verdict, 2, 0.0, momentum, weight_decay,
                              nesterov)
    _at(code_at, np.int32, 1, "code_at", who)
    _at(lr_at, w.dtype, 1, "lr_at", who)


def adam_update_guarded_at(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                           verdict: Any, code_at: Any, rates_at: Any, b1: float, b2: float,
                           eps: float, weight_decay: float) -> None:
    who = "adam_update_guarded_at"
    checks.adam_update_guarded(w, g, m, v, w_last, m_last, v_last, verdict, 2, 0.0, b1, b2, eps,
                               weight_decay, 1)
    _at(code_at, np.int32, 1, "code_at", who)
    _at(rates_at, w.dtype, 3, "rates_at", who)


def flag_nonfinite_loss_at(loss: Any, verdict: Any, step_at: Any, code_at: Any, losses: Any) -> None:
    who = "flag_nonfinite_loss_at"
    dtype = checks.check_float(loss, "loss", who)
    if tuple(loss.shape) != ():
        raise ValueError(f"{who}: loss must be a scalar (0-d array), got shape {tuple(loss.shape)}")
    _verdict(verdict, who)
    _at(step_at, np.int32, 1, "step_at", who)
    _at(code_at, np.int32, 1, "code_at", who)
    if np.dtype(losses.dtype) != dtype or losses.ndim != 1:
        raise TypeError(f"{who}: losses must be a 1-D {dtype} array (one per step), got "
                        f"{np.dtype(losses.dtype)} {tuple(losses.shape)}")


def dropout_forward_at(x: Any, key_at: Any, p: float, first_sample: int) -> None:
    checks.dropout_forward(x, 0, p, first_sample)
    _at(key_at, np.int32, 2, "key_at", "dropout_forward_at")


def gemm(a: Any, b: Any) -> None:
    who = "gemm"
    dtype = checks.check_float(a, "a", who)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"{who}: a (M, K) and b (K, N) must be matrices that multiply, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if np.dtype(b.dtype) != dtype:
        raise TypeError(f"{who}: b must be {dtype} like a, got {np.dtype(b.dtype)}")


def gemm_sum_parts(parts: Any) -> None:
    checks.check_float(parts, "parts", "gemm_sum_parts")
    if parts.ndim != 3 or not parts.flags.c_contiguous:
        raise ValueError(f"gemm_sum_parts: parts must be a C-contiguous (P, M, N) array, got shape "
                         f"{tuple(parts.shape)}")
