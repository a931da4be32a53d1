"""A captured step's kernels (kernels/step.cu and the *_at variants in optimizers.cu and
dropout.cu), run on the CPU through the g++ emulation, against their NumPy twins.

Oracles: step_begin and gather_rows against what they promise, written by hand (and
the loops of reference.gather_rows); each *_at kernel, and its twin, against the eager
kernel's NumPy twin given the same values as numbers, bit for bit: the per-step values
only move from an argument to device memory.
"""
from __future__ import annotations

import numpy as np
import pytest

from dualconv import kernels
from dualconv.divergence import NO_FAILURE
from dualconv.kernels import cpu_fused, cpu_step, cuda_step_plans, reference
from kernel_cases import DTYPES, assert_bitwise_equal

pytestmark = [pytest.mark.cuda_emulated,
              pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")]

STEP_UNDER_TEST = ("step_begin", "gather_rows", "sgd_update_guarded_at", "adam_update_guarded_at",
                   "flag_nonfinite_loss_at", "dropout_forward_at", "gemm", "gemm_sum_parts")

CODE = 6
VERDICTS = (NO_FAILURE, CODE + 1, CODE, CODE - 1)


def _emulated(emulator, kernel: str, *args):
    """``kernel`` through the emulation, as the dispatch point runs it: checks, then the plan."""
    getattr(kernels.checks_step, kernel)(*args)
    return emulator.run(cuda_step_plans.PLANS[kernel](*args))


def _spread(rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("clock", [0, 3, 6, 7, -1])
def test_step_begin_copies_the_clocks_row_and_advances_it(emulator, dtype, clock):
    rng = np.random.default_rng(clock + 1)
    floats = rng.standard_normal((7, 3)).astype(dtype)
    ints = rng.integers(-2**31, 2**31, (7, 5)).astype(np.int32)
    inside = 0 <= clock < 7
    for side in ("cpu", "emulated"):
        now_f, now_i = np.full(3, -1, dtype), np.full(5, -1, np.int32)
        at = np.array([clock], np.int32)
        args = (at, floats, ints, now_f, now_i)
        cpu_step.step_begin(*args) if side == "cpu" else _emulated(emulator, "step_begin", *args)
        assert at[0] == (clock + 1 if inside else clock), side
        assert_bitwise_equal(now_f, floats[clock] if inside else np.full(3, -1, dtype), side)
        assert_bitwise_equal(now_i, ints[clock] if inside else np.full(5, -1, np.int32), side)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, batch, step", [((40, 1, 4, 3), 8, 0), ((40, 1, 4, 3), 8, 4),
                                                ((9, 5), 3, 2), ((300, 7), 64, 1)])
def test_gather_rows_copies_the_steps_batch(emulator, dtype, shape, batch, step):
    rng = np.random.default_rng(batch + step)
    X = rng.standard_normal(shape).astype(dtype)
    y = rng.integers(0, 10, shape[0]).astype(np.int64)
    order = rng.permutation(shape[0]).astype(np.int64)
    rows = order[step * batch:(step + 1) * batch]  # by hand
    at = np.array([step], np.int32)
    for side in ("reference", "cpu", "emulated"):
        xb, yb = np.full((batch, *shape[1:]), np.nan, dtype), np.full(batch, -1, np.int64)
        args = (X, y, order, at, xb, yb)
        if side == "emulated":
            _emulated(emulator, "gather_rows", *args)
        else:
            getattr(reference if side == "reference" else cpu_step, "gather_rows")(*args)
        assert_bitwise_equal(xb, X[rows], side)
        assert_bitwise_equal(yb, y[rows], side)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("verdict", VERDICTS)
@pytest.mark.parametrize("momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.9, True, 0.01)])
def test_sgd_update_guarded_at_is_the_eager_kernel(emulator, dtype, verdict, momentum, nesterov,
                                                   weight_decay):
    rng = np.random.default_rng(2)
    w, g, v = (_spread(rng, 301, dtype) for _ in range(3))
    g[7] = np.inf if verdict == NO_FAILURE else g[7]
    lr = 0.0371
    settings = (momentum, weight_decay, nesterov)
    sides = {}
    for side in ("eager", "cpu", "emulated"):
        state = [w.copy(), v.copy() if momentum else None]
        last = [np.full_like(w, -7), np.full_like(w, -7) if momentum else None]
        flag = np.array([verdict], np.int32)
        if side == "eager":
            cpu_fused.sgd_update_guarded(state[0], g, state[1], *last, flag, CODE, lr, *settings)
        else:
            args = (state[0], g, state[1], *last, flag, np.array([CODE], np.int32),
                    np.array([lr], dtype), *settings)
            (cpu_step.sgd_update_guarded_at(*args) if side == "cpu"
             else _emulated(emulator, "sgd_update_guarded_at", *args))
        sides[side] = (state, last, int(flag[0]))
    for side in ("cpu", "emulated"):
        for ours, theirs in zip(sides[side][0] + sides[side][1], sides["eager"][0] + sides["eager"][1]):
            if theirs is not None:
                assert_bitwise_equal(ours, theirs, side)
        assert sides[side][2] == sides["eager"][2], side
    if verdict == NO_FAILURE:
        assert sides["eager"][2] == CODE + 1  # the non-finite gradient was caught: not vacuous


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("verdict", VERDICTS)
@pytest.mark.parametrize("t", [1, 2, 37])
def test_adam_update_guarded_at_is_the_eager_kernel(emulator, dtype, verdict, t):
    rng = np.random.default_rng(t)
    w, g, m = (_spread(rng, 257, dtype) for _ in range(3))
    v = np.abs(_spread(rng, 257, dtype))
    lr, b1, b2, eps, decay = 1e-3, 0.9, 0.999, 1e-8, 0.01
    rates = np.array([lr, 1 - b1 ** t, 1 - b2 ** t]).astype(dtype)  # as the eager plan casts them
    results = {}
    for side in ("eager", "cpu", "emulated"):
        state = [w.copy(), m.copy(), v.copy()]
        last = [np.full_like(w, -7) for _ in range(3)]
        flag = np.array([verdict], np.int32)
        if side == "eager":
            cpu_fused.adam_update_guarded(state[0], g, *state[1:], *last, flag, CODE, lr, b1, b2,
                                          eps, decay, t)
        else:
            args = (state[0], g, *state[1:], *last, flag, np.array([CODE], np.int32), rates,
                    b1, b2, eps, decay)
            (cpu_step.adam_update_guarded_at(*args) if side == "cpu"
             else _emulated(emulator, "adam_update_guarded_at", *args))
        results[side] = (state + last, int(flag[0]))
    for side in ("cpu", "emulated"):
        for ours, theirs in zip(results[side][0], results["eager"][0]):
            assert_bitwise_equal(ours, theirs, side)
        assert results[side][1] == results["eager"][1], side


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", [1.5, np.nan, -np.inf])
@pytest.mark.parametrize("verdict", VERDICTS)
def test_flag_nonfinite_loss_at_keeps_the_loss_and_flags_as_the_eager_kernel(emulator, dtype, loss,
                                                                          verdict):
    eager = np.array([verdict], np.int32)
    cpu_fused.flag_nonfinite_loss(np.array(loss, dtype), eager, CODE)
    for side in ("cpu", "emulated"):
        flag, losses = np.array([verdict], np.int32), np.zeros(5, dtype)
        args = (np.array(loss, dtype), flag, np.array([3], np.int32), np.array([CODE], np.int32),
                losses)
        cpu_step.flag_nonfinite_loss_at(*args) if side == "cpu" else _emulated(
            emulator, "flag_nonfinite_loss_at", *args)
        assert flag[0] == eager[0], side
        assert_bitwise_equal(losses, np.array([0, 0, 0, loss, 0], dtype), side)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("key", [0xFEDC_BA98_7654_3210, 12345, 2**64 - 1])
def test_dropout_forward_at_is_the_eager_kernel(emulator, dtype, key):
    x = np.random.default_rng(5).standard_normal((9, 3, 4)).astype(dtype)
    halves = np.array([key & 0xFFFFFFFF, key >> 32], np.uint32).view(np.int32)
    y, mask = cpu_fused.dropout_forward(x, key, 0.3, 0)
    for side in ("cpu", "emulated"):
        args = (x, halves, 0.3, 0)
        got = cpu_step.dropout_forward_at(*args) if side == "cpu" else _emulated(
            emulator, "dropout_forward_at", *args)
        assert_bitwise_equal(got, (y, mask), side)


@pytest.mark.parametrize("kernel, args, pattern", [
    ("step_begin", (np.zeros(1, np.int64), np.zeros((2, 3)), np.zeros((2, 1), np.int32),
                    np.zeros(3), np.zeros(1, np.int32)), r"clock must be an array of shape \(1,\) and dtype int32"),
    ("gather_rows", (np.zeros((4, 2), np.float32), np.zeros(4, np.int32), np.arange(4),
                     np.zeros(1, np.int32), np.zeros((2, 2), np.float32), np.zeros(2, np.int64)),
     r"y must be int64"),
    ("dropout_forward_at", (np.zeros((2, 2), np.float32), np.zeros(2, np.uint32), 0.5, 0),
     r"key_at must be an array of shape \(2,\) and dtype int32"),
    ("sgd_update_guarded_at", (*[np.zeros(3, np.float32)] * 2, None, np.zeros(3, np.float32), None,
                               np.array([NO_FAILURE], np.int32), np.array([2], np.int32),
                               np.array([0.1]), 0.0, 0.0, False), r"lr_at must be an array of shape \(1,\) and dtype float32"),
])
def test_step_kernels_reject_bad_arguments(kernel, args, pattern):
    with pytest.raises((TypeError, ValueError), match=f"{kernel}: {pattern}"):
        getattr(kernels, kernel)(*args)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("M, K, N", [(6, 25, 37), (1, 1, 1), (3, 0, 2), (16, 150, 9), (2, 1025, 3),
                                     (3, 2600, 2)])
def test_gemm_sums_each_dot_product_in_parts_in_order(emulator, dtype, M, K, N):
    """Oracle by hand: each output's terms k ascending, in parts of gemm_chunk(K) summed
    from 0, then the parts added in order, all in the dtype; operands read through their
    strides (transposed views and a slice)."""
    rng = np.random.default_rng(M * K * N)
    a_store = (rng.standard_normal((K, M)) * 10.0 ** rng.integers(-2, 3, (K, M))).astype(dtype)
    b_store = rng.standard_normal((N, 2 * K)).astype(dtype)
    a, b = a_store.T, b_store[:, ::2].T  # (M, K) transposed, (K, N) transposed and strided
    chunk = max(1, cuda_step_plans.gemm_chunk(K))
    expected = np.zeros((M, N), dtype)
    for m in range(M):
        for n in range(N):
            total = None
            for first in range(0, max(K, 1), chunk):
                part = dtype(0)
                for k in range(first, min(first + chunk, K)):
                    part = dtype(part + dtype(a[m, k] * b[k, n]))
                total = part if total is None else dtype(total + part)
            expected[m, n] = total
    assert_bitwise_equal(cpu_step.gemm(a, b), expected, "cpu")
    parts = _emulated(emulator, "gemm", a, b)
    got = parts[0] if len(parts) == 1 else _emulated(emulator, "gemm_sum_parts", parts)
    assert_bitwise_equal(got, expected, "emulated")
    assert len(parts) == (1 if K <= 4 * cuda_step_plans.GEMM_CHUNK else -(-K // chunk))
