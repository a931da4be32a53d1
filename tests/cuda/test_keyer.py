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
