"""The CUDA twins of a captured step's kernels: CuPy launches of kernels/step.cu, gemm.cu and
of the ``*_at`` variants in kernels/optimizers.cu and kernels/dropout.cu, planned by
cuda_step_plans.py once per call signature (cuda.run_plan) and compiled into cuda.py's
module with every other kernel.

Same functions and arguments as cpu_step.py, bitwise equal to it; they trust their
arguments (the dispatch point, dualconv.kernels, ran checks_step.py).
"""
from __future__ import annotations

from typing import Any

from .cuda import run_plan
from .cuda_step_plans import (plan_adam_update_guarded_at, plan_dropout_forward_at,
                              plan_flag_nonfinite_loss_at, plan_gather_rows, plan_gemm,
                              plan_gemm_sum_parts,
                              plan_sgd_update_guarded_at, plan_step_begin)


def step_begin(clock: Any, float_table: Any, int_table: Any, floats_now: Any, ints_now: Any) -> None:
    """The step's row of each table into the *_now arrays, the clock advanced; one launch."""
    run_plan(plan_step_begin, clock, float_table, int_table, floats_now, ints_now)


def gather_rows(X: Any, y: Any, order: Any, step_at: Any, xb: Any, yb: Any) -> None:
    """The step's batch into xb and yb; one launch."""
    run_plan(plan_gather_rows, X, y, order, step_at, xb, yb)


def sgd_update_guarded_at(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                          verdict: Any, code_at: Any, lr_at: Any, momentum: float,
                          weight_decay: float, nesterov: bool) -> None:
    """One guarded SGD step, its rate and code read on the device; one launch."""
    run_plan(plan_sgd_update_guarded_at, w, g, v, w_last, v_last, verdict, code_at, lr_at,
             momentum, weight_decay, nesterov)


def adam_update_guarded_at(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                           verdict: Any, code_at: Any, rates_at: Any, b1: float, b2: float,
                           eps: float, weight_decay: float) -> None:
    """One guarded Adam step, its rates and code read on the device; one launch."""
    run_plan(plan_adam_update_guarded_at, w, g, m, v, w_last, m_last, v_last, verdict, code_at,
             rates_at, b1, b2, eps, weight_decay)


def flag_nonfinite_loss_at(loss: Any, verdict: Any, step_at: Any, code_at: Any, losses: Any) -> None:
    """The guard's loss check with the code read on the device, the loss kept; one launch."""
    run_plan(plan_flag_nonfinite_loss_at, loss, verdict, step_at, code_at, losses)


def dropout_forward_at(x: Any, key_at: Any, p: float, first_sample: int) -> tuple[Any, Any]:
    """Dropout's mask and product with the key read on the device; one launch."""
    return run_plan(plan_dropout_forward_at, x, key_at, p, first_sample)


def gemm(a: Any, b: Any) -> Any:
    """a (M, K) @ b (K, N), no cuBLAS (a capture may hold it): one launch, and a second that
    adds the parts of a long sum; see cpu_step.gemm."""
    parts = run_plan(plan_gemm, a, b)
    return parts[0] if parts.shape[0] == 1 else gemm_sum_parts(parts)


def gemm_sum_parts(parts: Any) -> Any:
    """parts (P, M, N) -> their sum (M, N), added in order; one launch."""
    return run_plan(plan_gemm_sum_parts, parts)
