"""Both backends accept and reject the same inputs.

Each bad input goes through the dispatch point with NumPy arrays (which would
run the CPU twin) and through the emulated CUDA kernel (the plan CuPy would
launch, run by the g++ emulation); both must raise the same error with the
same message. A good input of the same shape then runs on both and agrees.
The same holds for the whole path a layer takes on a GPU, the dispatch point
given device arrays of the emulated CuPy (whose RawModule runs the plan).
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
def test_both_backends_reject_the_same_input(emulator, kernel, args, error, pattern):
    _assert_same_error(kernel, args, error, pattern, lambda: emulator.call(kernel, *args))


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


def test_dispatch_checks_and_twins_take_the_same_arguments():
    import inspect

    from dualconv.kernels import checks, cpu, cuda, reference
    for kernel, _ in GOOD:
        expected = list(inspect.signature(getattr(cpu, kernel)).parameters)
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
