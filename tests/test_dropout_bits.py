"""Dropout's counter-based bits (dualconv.layers.dropout.random_bits and dropout_mask)
against a scalar Python reference, and the statistics of the masks they make.

Oracle: lowbias32 and the keyed two-round formula written out on Python ints, one
element at a time, from the definition in random_bits' docstring.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.layers import dropout as dropout_module
from dualconv.layers.dropout import dropout_mask, random_bits

KEY = 0x0123_4567_89AB_CDEF


def lowbias32_reference(z: int) -> int:
    z ^= z >> 16
    z = (z * 0x7FEB352D) & 0xFFFFFFFF
    z ^= z >> 15
    z = (z * 0x846CA68B) & 0xFFFFFFFF
    return z ^ (z >> 16)


def bits_reference(number: int, key: int) -> int:
    lo, hi = number & 0xFFFFFFFF, number >> 32
    k_lo, k_hi = key & 0xFFFFFFFF, key >> 32
    return lowbias32_reference(lowbias32_reference(lo ^ k_lo) ^ lowbias32_reference(hi) ^ k_hi)


def test_lowbias32_reference_fixes_zero_and_mixes() -> None:
    """The property random_bits' uint32 shortcut rests on: h(0) == 0."""
    assert lowbias32_reference(0) == 0
    assert lowbias32_reference(1) != 1


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_random_bits_match_the_scalar_reference(dtype: type) -> None:
    numbers = np.array([0, 1, 2, 3, 1000, 2**31, 2**32 - 1], dtype=dtype)
    expected = [bits_reference(int(i), KEY) for i in numbers]
    bits = random_bits(np, numbers, KEY)
    assert bits.dtype == np.uint32
    assert_array_equal(bits, np.array(expected, dtype=np.uint32))


def test_random_bits_of_numbers_past_2_32_use_the_high_word() -> None:
    numbers = np.array([2**32, 2**32 + 5, 3 * 2**40 + 17, 2**64 - 1], dtype=np.uint64)
    expected = [bits_reference(int(i), KEY) for i in numbers]
    assert_array_equal(random_bits(np, numbers, KEY), np.array(expected, dtype=np.uint32))
    low_word_only = random_bits(np, numbers & np.uint64(0xFFFFFFFF), KEY)
    assert not np.array_equal(random_bits(np, numbers, KEY), low_word_only)


@pytest.mark.parametrize("block", [7, 1 << 16])
def test_dropout_mask_is_the_reference_in_any_memory_order_and_block(monkeypatch, block: int) -> None:
    """Element [n, c, h, w] is kept when the reference bits of its row-major number
    reach p * 2**32, for a C-ordered and a batch-last x, hashed in blocks that do
    not divide the size (7) or in one block."""
    monkeypatch.setattr(dropout_module, "NUMPY_BLOCK", block)
    p = 0.3
    shape = (3, 2, 4, 5)
    threshold = round(p * 2**32)
    keep = np.array([bits_reference(i, KEY) >= threshold for i in range(int(np.prod(shape)))])
    expected = (keep / (1 - p)).reshape(shape).astype(np.float32)
    c_ordered = np.ones(shape, dtype=np.float32)
    batch_last = np.ones(shape[1:] + shape[:1], dtype=np.float32).transpose(3, 0, 1, 2)
    for x in (c_ordered, batch_last):
        mask = dropout_mask(x, KEY, p)
        assert mask.dtype == np.float32 and mask.strides == x.strides
        assert_array_equal(mask, expected)


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_dropout_keep_rate_and_independence_between_steps(p: float) -> None:
    """Over 256 x 1024 elements the dropped fraction is p within 5 standard errors,
    in every row-major quarter, and two consecutive steps' masks are uncorrelated
    (their correlation within 5 / sqrt(n) of 0)."""
    layer = dc.Dropout(p)
    layer.seed(5)
    x = np.ones((256, 1024), dtype=np.float32)
    first, second = (layer.forward(x) == 0).ravel(), (layer.forward(x) == 0).ravel()
    n = first.size
    assert abs(first.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    for quarter in np.split(first, 4):
        assert abs(quarter.mean() - p) < 5 * np.sqrt(p * (1 - p) / quarter.size)
    assert abs(np.corrcoef(first, second)[0, 1]) < 5 / np.sqrt(n)
