"""The CUDA plans of a captured step's kernels: kernels/step.cu, kernels/gemm.cu and the
``*_at`` variants of kernels/optimizers.cu and kernels/dropout.cu.

As cuda_plans.py: each ``plan_<kernel>`` takes the kernel function's arguments, reads
only shapes, strides and dtypes, trusts them (checks_step.py ran at the dispatch point)
and returns a ``Launch``. The ``*_at`` kernels take their per-step values (learning
rate, bias corrections, guard code, Dropout key, step index) as device arrays, read by
the kernel where the eager kernel took a number; everything else is planned as for
the eager kernel, so both round the same way.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .cuda_plans import FLOAT_TYPES, INDEX_TYPES, _elementwise, plan_dropout_forward
from .launch import Input, Launch, Output, index_dtype, launch_1d


def plan_step_begin(clock: Any, float_table: Any, int_table: Any, floats_now: Any,
                    ints_now: Any) -> Launch:
    """Copy row clock[0] of both tables into the *_now arrays and advance the clock; one thread."""
    steps = int(float_table.shape[0])
    return launch_1d(f"step_begin<{FLOAT_TYPES[np.dtype(float_table.dtype)]}>", 1,
                     (float_table, int_table, floats_now, ints_now, clock, np.int32(steps),
                      np.int32(float_table.shape[1]), np.int32(int_table.shape[1])))


def plan_gather_rows(X: Any, y: Any, order: Any, step_at: Any, xb: Any, yb: Any) -> Launch:
    """xb, yb <- rows order[step*B : step*B + B] of X (N, ...) and y (N,); one thread per
    element of xb. X is read C-contiguous (laid out once if it is not)."""
    B = int(xb.shape[0])
    F = int(np.prod(xb.shape[1:], dtype=np.int64))
    itype = index_dtype([B * F], B * F)
    rows = Input(X, tuple(range(X.ndim)))
    return launch_1d(f"gather_rows<{FLOAT_TYPES[np.dtype(X.dtype)]}, {INDEX_TYPES[itype]}>", B * F,
                     (rows, y, order, step_at, xb, yb, itype.type(B), itype.type(F)))


def plan_sgd_update_guarded_at(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                               verdict: Any, code_at: Any, lr_at: Any, momentum: float,
                               weight_decay: float, nesterov: bool) -> Launch:
    """sgd_update_guarded with the learning rate at lr_at[0] and the code at code_at[0]."""
    v, v_last = (w, w_last) if v is None else (v, v_last)  # neither is touched when momentum is 0
    arrays = dict(w=w, g=g, v=v, w_last=w_last, v_last=v_last)
    launch = _elementwise("sgd_update_guarded_at", arrays, (momentum, weight_decay, bool(nesterov)))
    args = launch.args
    return Launch(launch.name, launch.grid, launch.block,
                  (*args[:5], verdict, args[5], lr_at, *args[6:], code_at))


def plan_adam_update_guarded_at(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any,
                                v_last: Any, verdict: Any, code_at: Any, rates_at: Any, b1: float,
                                b2: float, eps: float, weight_decay: float) -> Launch:
    """adam_update_guarded with rates_at = (lr, 1 - b1^t, 1 - b2^t) and the code at code_at[0]."""
    arrays = dict(w=w, g=g, m=m, v=v, w_last=w_last, m_last=m_last, v_last=v_last)
    launch = _elementwise("adam_update_guarded_at", arrays,
                          (b1, b2, 1 - b1, 1 - b2, eps, weight_decay))
    args = launch.args
    return Launch(launch.name, launch.grid, launch.block,
                  (*args[:7], verdict, args[7], rates_at, *args[8:], code_at))


def plan_flag_nonfinite_loss_at(loss: Any, verdict: Any, step_at: Any, code_at: Any,
                                losses: Any) -> Launch:
    """losses[step] = loss; verdict = code when the loss is not finite and verdict > code."""
    return launch_1d(f"flag_nonfinite_loss_at<{FLOAT_TYPES[np.dtype(loss.dtype)]}>", 1,
                     (loss, verdict, step_at, code_at, losses))


def plan_dropout_forward_at(x: Any, key_at: Any, p: float, first_sample: int) -> Launch:
    """dropout_forward with the key's low and high halves at key_at[0] and key_at[1]."""
    launch = plan_dropout_forward(x, 0, p, first_sample)
    name = launch.name.replace("dropout_forward<", "dropout_forward_at<")
    args = launch.args  # x, y, mask, total, N, F, batch_first, first_pair, key_lo, key_hi, threshold, scale
    return Launch(name, launch.grid, launch.block, (*args[:8], key_at, *args[10:]))


def _matrix(a: Any) -> tuple[Any, int, int]:
    """(what the kernel is passed, a's row and column strides in elements): a itself when it
    is C-contiguous, its transpose when it is F-contiguous (a view of C-ordered memory,
    read transposed), else a C-contiguous copy."""
    if a.flags.c_contiguous:
        return a, a.shape[1], 1
    if a.flags.f_contiguous:
        return a.T, 1, a.shape[0]
    return Input(a, (0, 1)), a.shape[1], 1


GEMM_CHUNK = 256
"""Terms per part of a long dot product (gemm.cu): a sum over more than 4 * GEMM_CHUNK
terms is cut into parts of GEMM_CHUNK, summed in order by gemm_sum_parts."""


def gemm_chunk(K: int) -> int:
    """The part length of a product with inner size K (the twins share this rule)."""
    return K if K <= 4 * GEMM_CHUNK else GEMM_CHUNK


def plan_gemm(a: Any, b: Any) -> Launch:
    """a (M, K) @ b (K, N) -> the parts P (parts, M, N) C-contiguous, parts = K / gemm_chunk(K)
    rounded up (one part: P[0] is the product); a transposed (F-contiguous) operand is read
    where it lies, any other non-contiguous one is copied first; one thread per element of P."""
    (M, K), N = a.shape, b.shape[1]
    chunk = max(1, gemm_chunk(K))
    parts = max(1, -(-K // chunk))
    a_arg, sam, sak = _matrix(a)
    b_arg, sbk, sbn = _matrix(b)
    itype = index_dtype([parts * M * N, M * K, K * N], parts * M * N)
    return launch_1d(f"gemm<{FLOAT_TYPES[np.dtype(a.dtype)]}, {INDEX_TYPES[itype]}>", parts * M * N,
                     (a_arg, b_arg, Output((parts, M, N), np.dtype(a.dtype)),
                      *(itype.type(v) for v in (M, N, K, sam, sak, sbk, sbn, chunk))))


def plan_gemm_sum_parts(parts: Any) -> Launch:
    """parts P (parts, M, N) C-contiguous -> C (M, N), the parts added in order; one thread
    per element of C."""
    count, M, N = parts.shape
    itype = index_dtype([count * M * N], M * N)
    return launch_1d(f"gemm_sum_parts<{FLOAT_TYPES[np.dtype(parts.dtype)]}, {INDEX_TYPES[itype]}>", M * N,
                     (parts, Output((M, N), np.dtype(parts.dtype)), itype.type(count), itype.type(M * N)))


PLANS: dict[str, Callable[..., Launch]] = {
    "step_begin": plan_step_begin,
    "gather_rows": plan_gather_rows,
    "sgd_update_guarded_at": plan_sgd_update_guarded_at,
    "adam_update_guarded_at": plan_adam_update_guarded_at,
    "flag_nonfinite_loss_at": plan_flag_nonfinite_loss_at,
    "dropout_forward_at": plan_dropout_forward_at,
    "gemm": plan_gemm,
    "gemm_sum_parts": plan_gemm_sum_parts,
}
"""Kernel name -> its plan, as cuda_plans.PLANS (which holds the eager step's kernels)."""
