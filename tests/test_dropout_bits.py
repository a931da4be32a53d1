"""Dropout's counter-based masks (dualconv.layers.dropout) against a scalar Python
reference, and the statistics of the masks they make.

Oracle: lowbias32, the keyed hash and the per-element recipe of ``dropout``'s
docstring written out on Python ints, one element at a time.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.layers import dropout as dropout_module
from dualconv.layers.dropout import dropout, keyed_hash, lowbias32

KEY = 0x0123_4567_89AB_CDEF


def lowbias32_reference(z: int) -> int:
    z ^= z >> 16
    z = (z * 0x7FEB352D) & 0xFFFFFFFF
    z ^= z >> 15
    z = (z * 0x846CA68B) & 0xFFFFFFFF
    return z ^ (z >> 16)


def keyed_hash_reference(i: int, key: int) -> int:
    return lowbias32_reference(lowbias32_reference(i ^ (key & 0xFFFFFFFF)) ^ (key >> 32))


def kept_reference(shape: tuple[int, ...], key: int, p: float) -> np.ndarray:
    """The keep decision of every element of an x of ``shape``, one element at a time."""
    N, F = shape[0], int(np.prod(shape[1:]))
    threshold = round(p * 2**16)
    kept = np.zeros((N, F), dtype=bool)
    for n in range(N):
        for j in range(F):
            word = lowbias32_reference(keyed_hash_reference(j, key) ^ keyed_hash_reference(F + n // 2, key))
            bits = (word >> 16) if n % 2 else (word & 0xFFFF)
            kept[n, j] = bits >= threshold
    return kept.reshape(shape)


def test_lowbias32_and_keyed_hash_match_the_reference() -> None:
    numbers = np.array([0, 1, 2, 3, 1000, 2**31, 2**32 - 1], dtype=np.uint32)
    assert_array_equal(lowbias32(numbers.copy()), [lowbias32_reference(int(i)) for i in numbers])
    assert_array_equal(keyed_hash(numbers, KEY), [keyed_hash_reference(int(i), KEY) for i in numbers])
    assert lowbias32_reference(1) != 1


def stored_alike(a: np.ndarray, b: np.ndarray) -> bool:
    """The same strides on every axis longer than one (a length-1 axis has any stride)."""
    return all(sa == sb for sa, sb, n in zip(a.strides, b.strides, a.shape) if n > 1)


@pytest.mark.parametrize("block", [5, 1 << 16])
@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (4, 7), (1, 6)])
def test_dropout_is_the_reference_in_any_memory_order_and_block(monkeypatch, block: int,
                                                                 shape: tuple[int, ...]) -> None:
    """The mask keeps what the reference keeps, scaled by 1/(1 - p), and y = x * mask
    exactly, for a C-ordered and a batch-last x, an odd batch (the last pair word is
    half used), hashed in blocks that do not divide the rows (5) or in one block;
    mask and y are stored like x."""
    monkeypatch.setattr(dropout_module, "NUMPY_BLOCK", block)
    p = 0.3
    expected = (kept_reference(shape, KEY, p) / (1 - p)).astype(np.float32)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    c_ordered = np.ascontiguousarray(x)
    batch_last = np.ascontiguousarray(np.moveaxis(x, 0, -1))
    batch_last = np.moveaxis(batch_last, -1, 0)
    for stored in (c_ordered, batch_last):
        y, mask = dropout(stored, KEY, p)
        assert mask.dtype == np.float32 and stored_alike(mask, stored) and stored_alike(y, stored)
        assert_array_equal(mask, expected)
        assert_array_equal(y, stored * expected)


def test_the_drop_probability_is_p_rounded_to_a_multiple_of_2_to_the_minus_16() -> None:
    """p = 0.5 compares the 16-bit halves against 32768: exactly the words' bit 15 and
    bit 31 decide (bits >= 2**15 iff the top bit of the half is set)."""
    x = np.ones((4, 300), dtype=np.float32)
    _, mask = dropout(x, KEY, 0.5)
    assert_array_equal(mask != 0, kept_reference(x.shape, KEY, 0.5))
    _, mask = dropout(x, KEY, 0.0)
    assert (mask == 1).all()


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_dropout_keep_rate_and_independence_between_steps(p: float) -> None:
    """Over 256 x 1024 elements the dropped fraction is p within 5 standard errors,
    in every quarter of the samples and of the features, between the even and the odd
    samples (the two halves of the words), and two consecutive steps' masks are
    uncorrelated (their correlation within 5 / sqrt(n) of 0)."""
    layer = dc.Dropout(p)
    layer.seed(5)
    x = np.ones((256, 1024), dtype=np.float32)
    first, second = layer.forward(x) == 0, layer.forward(x) == 0

    def close_to_p(dropped: np.ndarray) -> bool:
        return abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / dropped.size)

    assert close_to_p(first)
    assert all(close_to_p(part) for part in np.split(first, 4, axis=0) + np.split(first, 4, axis=1))
    assert close_to_p(first[0::2]) and close_to_p(first[1::2])
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 5 / np.sqrt(first.size)
    # neighbours sharing a word (samples 2m, 2m+1) and neighbouring features are uncorrelated too
    assert abs(np.corrcoef(first[0::2].ravel(), first[1::2].ravel())[0, 1]) < 5 / np.sqrt(first.size / 2)
    assert abs(np.corrcoef(first[:, 0::2].ravel(), first[:, 1::2].ravel())[0, 1]) < 5 / np.sqrt(first.size / 2)
