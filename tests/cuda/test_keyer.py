"""A call's key (signatures.keyer): the signature of every argument but the per-call ones,
written out per kernel; it tells apart what the check and the plan read, and nothing else."""
from __future__ import annotations

import numpy as np
import pytest

from dualconv.kernels.signatures import keyer, signature
from dualconv.shapes import Window


def test_a_key_is_each_arguments_signature_in_order():
    x = np.zeros((2, 3, 4, 5), np.float32)
    win = Window(3, 3, 1, 1, 0, 0)
    saved = ((2, 3, 4, 5), x)
    key = keyer(["x", "saved", "win", "flag"])
    assert key((x, saved, win, True)) == (
        (np.ndarray, (2, 3, 4, 5), x.strides, np.dtype(np.float32)),
        (tuple, (tuple, 2, 3, 4, 5), (np.ndarray, (2, 3, 4, 5), x.strides, np.dtype(np.float32))),
        win, True)
    assert key((x, saved, win, True)) == tuple(signature(a) for a in (x, saved, win, True))


def test_per_call_numbers_are_left_out_and_layouts_dtypes_are_not():
    key = keyer(["w", "lr", "v", "step"], per_call=["lr", "step"])
    w = np.zeros((4, 6), np.float32)
    assert key((w, 0.1, None, 1)) == key((w.copy(), 0.5, None, 7)) == (signature(w), None)
    assert key((w, 0.1, None, 1)) != key((np.asfortranarray(w), 0.1, None, 1))
    assert key((w, 0.1, None, 1)) != key((w.astype(np.float64), 0.1, None, 1))
    assert key((w, 0.1, None, 1)) != key((w, 0.1, w, 1))


def test_a_call_with_another_number_of_arguments_or_no_signature_raises():
    key = keyer(["x", "win"])
    with pytest.raises(ValueError):
        key((np.zeros(3),))
    with pytest.raises(ValueError):
        key((np.zeros(3), None, None))
    with pytest.raises(AttributeError):
        key(([1, 2], None))
    with pytest.raises(TypeError, match=r"per-call parameters \['lr'\]"):
        keyer(["x", "win"], per_call=["lr"])


def test_a_list_parameter_is_keyed_by_each_arrays_signature():
    """A list kernel's role (``lists``): a sequence of arrays or None, keyed by its type and
    each array's type, shape, memory order and dtype; anything else in it has no key."""
    key = keyer(["ws", "vs", "lr"], per_call=["lr"], lists=["ws", "vs"])
    a, b = np.zeros((4, 6), np.float32), np.zeros(3, np.float32)
    assert key(((a, b), None, 0.1)) == key(((a.copy(), b.copy()), None, 0.5))
    assert key(((a, b), None, 0.1)) == (
        (tuple, (np.ndarray, a.shape, a.strides, a.dtype), (np.ndarray, b.shape, b.strides, b.dtype)), None)
    for other in [(a,), (a, b, b), (np.asfortranarray(a), b), (a, b.astype(np.float64)), [a, b]]:
        assert key(((a, b), None, 0.1)) != key((other, None, 0.1)), other
    assert key(((a, b), None, 0.1)) != key(((a, b), (a, b), 0.1))
    with pytest.raises(AttributeError):
        key(((a, 1.0), None, 0.1))


def test_a_call_with_a_numpy_scalar_in_a_list_is_not_remembered():
    """A NumPy scalar among a list's arrays has a shape, strides and dtype, but its value
    is not in the key: a call holding one is never remembered (checked in full each time)."""
    from dualconv.kernels.signatures import Remembered
    calls = Remembered(["ws", "lr"], per_call=["lr"], lists=["ws"])
    a = np.zeros(3, np.float32)
    calls.learn(((a, np.float32(1)), 0.1), print)
    calls.learn(([a, np.float64(1)], 0.1), print)
    assert calls.runs == {}
    calls.learn(((a, a), 0.1), print)
    assert list(calls.runs.values()) == [print]
