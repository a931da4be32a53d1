"""The NumPy twins of a captured step's kernels (kernels/step.cu, kernels/gemm.cu and the
``*_at`` variants of kernels/optimizers.cu and kernels/dropout.cu).

The ``*_at`` twins read their per-step values from arrays, where the eager twins
(cpu_fused.py) take numbers, and then do exactly what those do: the values in the
arrays are already rounded to the dtype the eager kernels round them to, so the
results are the same bits. Inputs were checked by the dispatch point
(dualconv.kernels, checks_step.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .cpu_fused import _guarded, adam_update_corrected, dropout_forward, flag_nonfinite_loss, sgd_update
from .cuda_step_plans import gemm_chunk


def step_begin(clock: np.ndarray, float_table: np.ndarray, int_table: np.ndarray,
               floats_now: np.ndarray, ints_now: np.ndarray) -> None:
    """Copy row clock[0] of each table into floats_now and ints_now, then advance the
    clock by one; a clock outside the tables changes nothing."""
    s = int(clock[0])
    if not 0 <= s < float_table.shape[0]:
        return
    floats_now[...] = float_table[s]
    ints_now[...] = int_table[s]
    clock[0] = s + 1


def gather_rows(X: np.ndarray, y: np.ndarray, order: np.ndarray, step_at: np.ndarray,
                xb: np.ndarray, yb: np.ndarray) -> None:
    """xb[i] = X[order[s*B + i]] and yb[i] = y[order[s*B + i]] for i < B, s = step_at[0]."""
    B = xb.shape[0]
    rows = order[int(step_at[0]) * B:][:B]
    np.take(X, rows, axis=0, out=xb)
    np.take(y, rows, axis=0, out=yb)


def sgd_update_guarded_at(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, w_last: np.ndarray,
                          v_last: np.ndarray | None, verdict: np.ndarray, code_at: np.ndarray,
                          lr_at: np.ndarray, momentum: float, weight_decay: float,
                          nesterov: bool) -> None:
    """cpu_fused.sgd_update_guarded with the rate lr_at[0] and the code code_at[0]."""
    state = [(w, w_last)] + ([] if v is None else [(v, v_last)])
    lr = lr_at[0]
    _guarded(verdict, int(code_at[0]), state,
             lambda: sgd_update(w, g, v, lr, momentum, weight_decay, nesterov))


def adam_update_guarded_at(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray,
                           w_last: np.ndarray, m_last: np.ndarray, v_last: np.ndarray,
                           verdict: np.ndarray, code_at: np.ndarray, rates_at: np.ndarray,
                           b1: float, b2: float, eps: float, weight_decay: float) -> None:
    """cpu_fused.adam_update_guarded with (lr, 1 - b1^t, 1 - b2^t) = rates_at and the code
    code_at[0]."""
    lr, bc1, bc2 = rates_at[0], rates_at[1], rates_at[2]
    _guarded(verdict, int(code_at[0]), [(w, w_last), (m, m_last), (v, v_last)],
             lambda: adam_update_corrected(w, g, m, v, lr, bc1, bc2, b1, b2, eps, weight_decay))


def flag_nonfinite_loss_at(loss: np.ndarray, verdict: np.ndarray, step_at: np.ndarray,
                           code_at: np.ndarray, losses: np.ndarray) -> None:
    """losses[step_at[0]] = loss, then cpu_fused.flag_nonfinite_loss with the code code_at[0]."""
    losses[int(step_at[0])] = loss
    flag_nonfinite_loss(loss, verdict, int(code_at[0]))


def key_of(key_at: np.ndarray) -> int:
    """The 64-bit key whose low and high halves key_at[0] and key_at[1] hold (as int32 bits)."""
    halves = np.asarray(key_at[:2]).astype(np.int32).view(np.uint32)
    return int(halves[0]) | int(halves[1]) << 32


def dropout_forward_at(x: np.ndarray, key_at: np.ndarray, p: float,
                       first_sample: int) -> tuple[np.ndarray, np.ndarray]:
    """cpu_fused.dropout_forward with the key read from key_at (see key_of)."""
    return dropout_forward(x, key_of(key_at), p, first_sample)


def gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) -> (M, N) in the gemm kernel's order, bit for bit (not BLAS's):
    the k terms cut into parts of gemm_chunk(K) (cuda_step_plans.py), each part summed from
    0 with k ascending, each product rounded to the dtype before it is added, then the parts
    added in order (gemm_sum_parts)."""
    (M, K), N = a.shape, b.shape[1]
    chunk = max(1, gemm_chunk(K))
    parts = np.zeros((max(1, -(-K // chunk)), M, N), dtype=a.dtype)
    for j in range(chunk):  # the j-th term of every part at once
        k = np.arange(j, K, chunk)
        parts[:len(k)] += a[:, k].T[:, :, None] * b[k][:, None, :]
    return parts[0] if len(parts) == 1 else gemm_sum_parts(parts)


def gemm_sum_parts(parts: np.ndarray) -> np.ndarray:
    """parts (P, M, N) -> (M, N): parts[0] + parts[1] + ..., in that order."""
    out = parts[0].copy()
    for p in range(1, len(parts)):
        out += parts[p]
    return out
