"""The divergence guard's kernels (kernels/optimizers.cu: sgd_update_guarded,
adam_update_guarded, flag_nonfinite_loss), run on the CPU through the g++
emulation, against their CPU twins and against what the guard promises.

The promise, stated independently of both twins: with the verdict above the
step's code, a guarded update equals the plain update (cpu.sgd_update /
adam_update, themselves bitwise equal to their kernels: test_cuda_fused.py),
leaves the state before it in the last-good arrays, and sets the verdict to
code + 1 exactly when a result is not finite; with the verdict at or below the
code it changes nothing at all.
"""
from __future__ import annotations

import numpy as np
import pytest

from dualconv.divergence import NO_FAILURE
from dualconv import kernels
from dualconv.kernels import cpu_fused as cpu
from kernel_cases import DTYPES, assert_bitwise_equal

pytestmark = [pytest.mark.cuda_emulated,
              pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")]

GUARDED_UNDER_TEST = ("sgd_update_guarded", "adam_update_guarded", "flag_nonfinite_loss")

CODE = 6  # step 3
VERDICTS = {"no failure": NO_FAILURE, "this step's update failed": CODE + 1,
            "this step's loss failed": CODE, "an earlier step failed": CODE - 1}
SGD_SETTINGS = [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.01)]  # momentum, nesterov, decay


def _state(rng: np.random.Generator, n: int, dtype, count: int, bad_gradient: bool):
    arrays = [(rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(dtype)
              for _ in range(count)]
    if bad_gradient:  # one NaN and one overflowing gradient element
        arrays[1][[5, n - 1]] = [np.nan, np.finfo(dtype).max]
    return arrays


def _expected(live, verdict_before, run_plain):
    """What the guard promises, from the plain update on copies."""
    if verdict_before <= CODE:
        return [a.copy() for a in live], verdict_before
    after = [a.copy() for a in live]
    run_plain(*after)
    finite = all(np.isfinite(a).all() for a in after)
    return after, verdict_before if finite else CODE + 1


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("verdict", VERDICTS.values(), ids=VERDICTS.keys())
@pytest.mark.parametrize("bad_gradient", [False, True], ids=["finite", "non-finite"])
@pytest.mark.parametrize("momentum, nesterov, weight_decay", SGD_SETTINGS)
def test_sgd_update_guarded(emulator, dtype, verdict, bad_gradient, momentum, nesterov,
                            weight_decay):
    w, g, v = _state(np.random.default_rng(0), 517, dtype, 3, bad_gradient)
    v = v if momentum else None
    settings = (0.05, momentum, weight_decay, nesterov)
    live = [w] if v is None else [w, v]
    expected, expected_verdict = _expected(
        live, verdict,
        lambda w2, v2=None: cpu.sgd_update(w2, g, v2, *settings))
    for side in ("cpu", "emulated"):
        state = [a.copy() for a in live]
        last = [np.full_like(a, -7.0) for a in live]  # must be overwritten, or kept when skipped
        flag = np.array([verdict], np.int32)
        args = (state[0], g, state[1] if v is not None else None, last[0],
                last[1] if v is not None else None, flag, CODE, *settings)
        if side == "cpu":
            cpu.sgd_update_guarded(*args)
        else:
            emulator.call("sgd_update_guarded", *args)
        for name, ours, theirs in zip(("w", "v"), state, expected):
            assert_bitwise_equal(ours, theirs, f"{side} {name}")
        for name, ours, before in zip(("w_last", "v_last"), last, live):
            kept = before if verdict > CODE else np.full_like(before, -7.0)
            assert_bitwise_equal(ours, kept, f"{side} {name}")
        assert flag[0] == expected_verdict, side
    if bad_gradient and verdict > CODE:
        assert expected_verdict == CODE + 1  # the case is not vacuous


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("verdict", VERDICTS.values(), ids=VERDICTS.keys())
@pytest.mark.parametrize("bad_gradient", [False, True], ids=["finite", "non-finite"])
def test_adam_update_guarded(emulator, dtype, verdict, bad_gradient):
    w, g, m, v = _state(np.random.default_rng(1), 389, dtype, 4, bad_gradient)
    v = np.abs(v)
    settings = (1e-3, 0.9, 0.999, 1e-8, 0.01, 4)
    live = [w, m, v]
    expected, expected_verdict = _expected(
        live, verdict, lambda w2, m2, v2: cpu.adam_update(w2, g, m2, v2, *settings))
    for side in ("cpu", "emulated"):
        state = [a.copy() for a in live]
        last = [np.full_like(a, -7.0) for a in live]
        flag = np.array([verdict], np.int32)
        args = (state[0], g, state[1], state[2], *last, flag, CODE, *settings)
        if side == "cpu":
            cpu.adam_update_guarded(*args)
        else:
            emulator.call("adam_update_guarded", *args)
        for name, ours, theirs in zip("wmv", state, expected):
            assert_bitwise_equal(ours, theirs, f"{side} {name}")
        for name, ours, before in zip(("w_last", "m_last", "v_last"), last, live):
            kept = before if verdict > CODE else np.full_like(before, -7.0)
            assert_bitwise_equal(ours, kept, f"{side} {name}")
        assert flag[0] == expected_verdict, side


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", [1.5, 0.0, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("verdict", VERDICTS.values(), ids=VERDICTS.keys())
def test_flag_nonfinite_loss(emulator, dtype, loss, verdict):
    # by hand: a non-finite loss marks this step (code), unless an earlier step failed
    expected = CODE if not np.isfinite(loss) and verdict > CODE else verdict
    for side in ("cpu", "emulated"):
        flag = np.array([verdict], np.int32)
        value = np.array(loss, dtype)
        if side == "cpu":
            cpu.flag_nonfinite_loss(value, flag, CODE)
        else:
            emulator.call("flag_nonfinite_loss", value, flag, CODE)
        assert flag[0] == expected, side


W = np.zeros(6, np.float32)
OK = np.array([NO_FAILURE], np.int32)


@pytest.mark.parametrize("kernel, args, pattern", [
    ("sgd_update_guarded", (W, W, W, W, None, OK, 4, 0.1, 0.9, 0.0, False), r"v and v_last go together"),
    ("sgd_update_guarded", (W, W, None, W[:3], None, OK, 4, 0.1, 0.0, 0.0, False), r"w_last must have shape"),
    ("adam_update_guarded", (W, W, W, W, W, W, W.astype(np.float64), OK, 4, 0.1, 0.9, 0.999, 1e-8, 0.0, 1),
     r"v_last must be float32"),
    ("flag_nonfinite_loss", (W[0], OK.astype(np.int64), 4),
     r"verdict must be an int32 array of shape \(1,\)"),
    ("flag_nonfinite_loss", (W[0], OK, 3), r"code must be 2 \* step"),
    ("flag_nonfinite_loss", (W, OK, 4), r"loss must be a scalar"),
])
def test_guard_kernels_reject_bad_arguments(kernel, args, pattern):
    with pytest.raises((TypeError, ValueError), match=f"{kernel}: {pattern}"):
        getattr(kernels, kernel)(*args)
