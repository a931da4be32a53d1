"""kernels/signatures.py's signature(): what a call's key holds per argument, by hand.

The rule (the module's docstring): a plain value is itself; an array is (type, shape,
strides, dtype); a tuple is its type and its items' signatures (a tuple of arrays of one
type: its type, that type, its length and each array's (shape, strides, dtype)).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dualconv.kernels.signatures import signature
from dualconv.shapes import Window


class Pair(NamedTuple):
    first: int
    second: int


def test_plain_values_are_themselves() -> None:
    win = Window(2, 2, 2, 2, 0, 0)
    for value in (None, True, 3, 2.5, "sum", np.float32(0.5), win):
        assert signature(value) is value


def test_an_array_is_its_type_shape_strides_and_dtype() -> None:
    a = np.zeros((2, 3), np.float32)
    assert signature(a) == (np.ndarray, (2, 3), (12, 4), np.dtype(np.float32))
    assert signature(a.T) == (np.ndarray, (3, 2), (4, 12), np.dtype(np.float32))


def test_tuples_by_their_items() -> None:
    a, b = np.zeros(4, np.float64), np.zeros((2, 2), np.float32)
    assert signature((1, 2)) == (tuple, 1, 2)
    assert signature((a, b)) == (tuple, np.ndarray, 2, ((4,), (8,), np.dtype(np.float64)),
                                 ((2, 2), (8, 4), np.dtype(np.float32)))
    # mixed items, as conv2d_forward's saved (the input's shape, the columns)
    assert signature(((8, 1, 28, 28), b)) == (tuple, (tuple, 8, 1, 28, 28),
                                              (np.ndarray, (2, 2), (8, 4), np.dtype(np.float32)))
    # a tuple subclass and a nested tuple of arrays among mixed items
    assert signature((Pair(1, 2), (a,), 7)) == (
        tuple, (Pair, 1, 2), (tuple, np.ndarray, 1, ((4,), (8,), np.dtype(np.float64))), 7)
