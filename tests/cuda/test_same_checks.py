"""Both backends accept and reject the same inputs, checked once at the dispatch point.

dualconv.kernels runs checks.py once and then the twin; the twins and the CUDA
plans trust their arguments. Each bad input goes through the dispatch point
with NumPy arrays and must be refused before any twin runs; given device
arrays of the emulated CuPy (the path a layer takes on a GPU, whose RawModule
runs the plan), it must raise the same error with the same message. A good
input of the same shape runs on both and agrees, and the GPU path runs exactly
the checks the CPU path runs: none twice, and on a signature seen before none but
those of its per-call numbers.
"""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from dualconv import kernels
from dualconv.shapes import Window
from kernel_cases import assert_bitwise_equal

pytestmark = pytest.mark.cuda_emulated

rng = np.random.default_rng(7)
x = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
gy = rng.standard_normal((1, 2, 1, 1)).astype(np.float32)
argmax = np.zeros((1, 2, 1, 1), np.int32)
col = rng.standard_normal((2, 2, 2, 1, 1, 1)).astype(np.float32)
fits = Window(2, 2, 1, 1, 0, 0)
too_big = Window(3, 3, 1, 1, 0, 0)  # a 3x3 window on a 2x2 input: empty output

BAD = [
    # (kernel, arguments, error, message pattern)
    ("max_pool_forward", (x.astype(np.float16), fits), TypeError, r"float32 or float64, got float16"),
    ("avg_pool_forward", (x.astype(np.int32), fits), TypeError, r"float32 or float64, got int32"),
    ("im2col", (x.astype(np.float16), fits), TypeError, r"float32 or float64, got float16"),
    ("max_pool_forward", (x, too_big), ValueError, r"larger than the padded input \(2, 2\)"),
    ("avg_pool_forward", (x, too_big), ValueError, r"larger than the padded input \(2, 2\)"),
    ("im2col", (x, too_big), ValueError, r"larger than the padded input \(2, 2\)"),
    ("im2col", (x, Window(1, 1, 0, 1, 0, 0)), ValueError, r"sy must be >= 1"),
    ("dropout_forward", (x, 12345, 0.25, 1), ValueError, r"must start at an even sample, got 1"),
    ("dropout_forward", (x, 12345, 1.0, 0), ValueError, r"p must be in \[0, 1\), got 1.0"),
    ("dropout_forward", (x.astype(np.float16), 12345, 0.25, 0), TypeError, r"float32 or float64, got float16"),
    ("im2col", (x, Window(1, 1, 1, 1, -1, 0)), ValueError, r"padding must be >= 0"),
    ("max_pool_forward", (x[0], fits), ValueError, r"x must be 4-D"),
    ("max_pool_backward", (gy.astype(np.float16), argmax, 2, 2, fits), TypeError, r"gy must be float32"),
    ("max_pool_backward", (gy, argmax.astype(np.int64), 2, 2, fits), TypeError, r"argmax must be int32"),
    ("max_pool_backward", (gy, argmax, 3, 3, fits), ValueError, r"gy must have shape \(1, 2, 2, 2\)"),
    ("max_pool_backward", (gy, argmax, 1, 1, fits), ValueError, r"larger than the padded input \(1, 1\)"),
    ("avg_pool_backward", (gy, 3, 3, fits), ValueError, r"gy must have shape \(1, 2, 2, 2\)"),
    ("col2im", (col, 3, 3, fits), ValueError, r"col has out_h, out_w = \(1, 1\)"),
    ("col2im", (col, 2, 2, Window(1, 2, 1, 1, 0, 0)), ValueError, r"col has kh, kw = \(2, 2\)"),
    ("col2im", (col.astype(np.float16), 2, 2, fits), TypeError, r"col must be float32"),
]


each_bad_input = pytest.mark.parametrize("kernel, args, error, pattern", BAD,
                                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(BAD)])


def _assert_same_error(kernel, args, error, pattern, on_cuda) -> None:
    """The CPU path and ``on_cuda()`` raise ``error`` matching ``pattern``, with one message."""
    with pytest.raises(error, match=pattern) as cpu_error:
        getattr(kernels, kernel)(*args)
    with pytest.raises(error, match=pattern) as cuda_error:
        on_cuda()
    assert str(cpu_error.value) == str(cuda_error.value)
    assert str(cpu_error.value).startswith(f"{kernel}: ")


@each_bad_input
def test_the_dispatch_refuses_bad_input_before_any_twin_runs(monkeypatch, kernel, args, error,
                                                              pattern):
    from dualconv.kernels import cuda, cuda_plans

    def reached(*_):
        raise AssertionError(f"{kernel}: a twin or plan ran on input the dispatch should refuse")
    for module, name in ((kernels.twin_for(np, kernel), kernel), (cuda, kernel), (cuda_plans, f"plan_{kernel}")):
        monkeypatch.setattr(module, name, reached)
    with pytest.raises(error, match=pattern) as refused:
        getattr(kernels, kernel)(*args)
    assert str(refused.value).startswith(f"{kernel}: ")


GOOD = [
    ("max_pool_forward", (x, fits)),
    ("avg_pool_forward", (x, fits)),
    ("im2col", (x, fits)),
    ("max_pool_backward", (gy, argmax, 2, 2, fits)),
    ("avg_pool_backward", (gy, 2, 2, fits)),
    ("col2im", (col, 2, 2, fits)),
    ("dropout_forward", (x, 12345, 0.25, 0)),
]


@pytest.mark.parametrize("kernel, args", GOOD, ids=[k for k, _ in GOOD])
def test_both_backends_accept_the_same_input(emulator, kernel, args):
    assert_bitwise_equal(emulator.call(kernel, *args), getattr(kernels, kernel)(*args), kernel)


@pytest.fixture
def stand_in():
    """The emulated CuPy module (dualconv.testing.emulated_cupy), active for the test."""
    if shutil.which("g++") is None:
        pytest.skip("the emulated CuPy needs g++")
    from dualconv.testing import emulated_cupy
    with emulated_cupy():
        import cupy
        yield cupy


def _on_device(args, cupy):
    return tuple(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args)


def _on_host(result, cupy):
    return tuple(map(cupy.asnumpy, result)) if isinstance(result, tuple) else cupy.asnumpy(result)


@each_bad_input
def test_dispatch_rejects_the_same_input_on_the_stand_in(stand_in, kernel, args, error, pattern):
    _assert_same_error(kernel, args, error, pattern,
                       lambda: getattr(kernels, kernel)(*_on_device(args, stand_in)))


@pytest.mark.parametrize("kernel, args", GOOD, ids=[k for k, _ in GOOD])
def test_dispatch_accepts_the_same_input_on_the_stand_in(stand_in, kernel, args):
    on_device = getattr(kernels, kernel)(*_on_device(args, stand_in))
    assert_bitwise_equal(_on_host(on_device, stand_in), getattr(kernels, kernel)(*args), kernel)


w, g, m, v, w_last, m_last, v_last = rng.standard_normal((7, 6)).astype(np.float32)
FUSED = [
    ("sgd_update", (w, g, v, 0.1, 0.9, 0.0, False)),
    ("adam_update", (w, g, m, np.abs(v), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)),
    ("sgd_update_guarded", (w, g, None, w_last, None, np.array([2**31 - 1], np.int32), 2, 0.1,
                            0.0, 0.0, False)),
    ("adam_update_guarded", (w, g, m, np.abs(v), w_last, m_last, v_last,
                             np.array([2**31 - 1], np.int32), 2, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)),
    ("flag_nonfinite_loss", (np.array(np.nan, np.float32), np.array([2**31 - 1], np.int32), 2)),
    ("softmax_cross_entropy", (rng.standard_normal((3, 4)).astype(np.float32),
                               np.array([0, 3, 1]))),
    ("max_pool_values", (x, fits)),
]


SHAPE_CHECKS = {"check_float", "check_shape", "check_window", "check_fits", "_image",
                "_pooled_grad", "_same", "_verdict", "_like", "_conv_weight", "_dense"}
"""The helpers of checks.py that read shapes and dtypes (not per-call numbers)."""


def _counting_checks(monkeypatch) -> list[str]:
    """Every function of checks.py replaced by one that records its name when called; the
    dispatch's memory of signatures emptied, so that the next call is a first one."""
    import inspect

    from dualconv.kernels import checks
    calls: list[str] = []

    def counted(name, f):
        return lambda *a, **k: calls.append(name) or f(*a, **k)
    for name, f in inspect.getmembers(checks, inspect.isfunction):
        if f.__module__ == checks.__name__:
            monkeypatch.setattr(checks, name, counted(name, f))
    monkeypatch.setattr(kernels, "_dispatch", kernels._Dispatchers())
    return calls


@pytest.mark.parametrize("kernel, args", GOOD + FUSED, ids=[k for k, _ in GOOD + FUSED])
def test_a_gpu_call_runs_the_checks_a_cpu_call_runs_once(stand_in, monkeypatch, kernel, args):
    """Every function of checks.py, counted: the stand-in's path (dispatch, CUDA twin,
    plan, launch) calls exactly what the NumPy path calls, the kernel's check once. A
    second call of the same signature (new arrays of the same shapes, memory orders and
    dtypes) checks none of what the first checked but its per-call numbers, and gives
    the same result; another dtype is a new signature, checked once in full."""
    calls = _counting_checks(monkeypatch)
    getattr(kernels, kernel)(*(a.copy() if isinstance(a, np.ndarray) else a for a in args))
    on_cpu, calls[:] = list(calls), []
    first = getattr(kernels, kernel)(*_on_device(args, stand_in))
    assert calls == on_cpu, f"{kernel}: the GPU path ran the checks {calls}, the CPU path {on_cpu}"
    assert calls.count(kernel) == 1, f"{kernel}: checks.{kernel} ran {calls.count(kernel)} times"
    assert SHAPE_CHECKS & set(calls), f"{kernel}: a first call read no shape: {calls}"

    calls[:] = []
    again = getattr(kernels, kernel)(*_on_device(args, stand_in))
    assert kernel not in calls and not SHAPE_CHECKS & set(calls), \
        f"{kernel}: a second call of one signature ran {calls}"
    if first is not None:
        assert_bitwise_equal(_on_host(again, stand_in), _on_host(first, stand_in), kernel)

    calls[:] = []
    wide = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a
                 for a in args)
    getattr(kernels, kernel)(*_on_device(wide, stand_in))
    assert calls.count(kernel) == 1 and SHAPE_CHECKS & set(calls), f"{kernel}: float64 ran {calls}"


PER_CALL_BAD = [
    # (kernel, good arguments, the argument replaced, its bad value, message pattern)
    ("sgd_update_guarded", FUSED[2][1], 6, 3, r"code must be 2 \* step"),
    ("adam_update_guarded", FUSED[3][1], 14, 0, r"step counts from 1, got 0"),
    ("adam_update", FUSED[1][1], 9, 0, r"step counts from 1, got 0"),
    ("sgd_update", (w, g, None, 0.1, 0.0, 0.0, False), 4, 0.9, r"momentum needs a velocity"),
    ("flag_nonfinite_loss", FUSED[4][1], 2, 1, r"code must be 2 \* step"),
    ("dropout_forward", (x, 12345, 0.25, 0), 3, 1, r"must start at an even sample, got 1"),
    ("dropout_forward", (x, 12345, 0.25, 0), 2, 1.0, r"p must be in \[0, 1\), got 1.0"),
]


@pytest.mark.parametrize("kernel, args, at, bad, pattern", PER_CALL_BAD,
                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(PER_CALL_BAD)])
def test_a_signature_seen_before_still_checks_its_per_call_numbers(stand_in, kernel, args, at,
                                                                     bad, pattern):
    """A per-call number (a step code, Adam's step, Dropout's first sample) is left out of
    the signature the dispatch remembers, so it is checked on every call: after a good
    call, a bad number with the same arrays raises what a first call raises."""
    wrong = (*args[:at], bad, *args[at + 1:])
    with pytest.raises(ValueError, match=pattern) as first:
        getattr(kernels, kernel)(*_on_device(wrong, stand_in))
    for on in (lambda a: a, lambda a: _on_device(a, stand_in)):
        getattr(kernels, kernel)(*on(tuple(a.copy() if isinstance(a, np.ndarray) else a
                                           for a in args)))
        with pytest.raises(ValueError, match=pattern) as later:
            getattr(kernels, kernel)(*on(wrong))
        assert str(later.value) == str(first.value)


def test_dispatch_checks_and_twins_take_the_same_arguments():
    import inspect

    from dualconv.kernels import checks, cuda, reference
    for kernel, _ in GOOD:
        expected = list(inspect.signature(getattr(kernels.twin_for(np, kernel), kernel)).parameters)
        for module in (kernels, checks, reference, cuda):
            assert list(inspect.signature(getattr(module, kernel)).parameters) == expected, \
                f"{module.__name__}.{kernel}"


def test_max_pool_values_is_max_pool_forwards_maxima_and_checks_alike(stand_in):
    """The maxima-alone variant (no plan of its own: on the GPU it is max_pool_forward's
    launch) takes the same arguments, rejects what max_pool_forward rejects, and gives
    its y on both backends."""
    import inspect

    from dualconv.kernels import checks, cpu, cuda, reference
    expected = list(inspect.signature(cpu.max_pool_values).parameters)
    for module in (kernels, checks, reference, cuda):
        assert list(inspect.signature(module.max_pool_values).parameters) == expected
    for args in ((x, too_big), (x.astype(np.float16), fits)):
        with pytest.raises((ValueError, TypeError)) as on_host:
            kernels.max_pool_values(*args)
        with pytest.raises(on_host.type, match=re.escape(str(on_host.value))):
            kernels.max_pool_values(*_on_device(args, stand_in))
    y = kernels.max_pool_forward(x, fits)[0]
    assert_bitwise_equal(kernels.max_pool_values(x, fits), y, "numpy")
    assert_bitwise_equal(stand_in.asnumpy(kernels.max_pool_values(*_on_device((x, fits), stand_in))), y, "cupy")
