"""Dropout's counter-based masks: the CPU twin (dualconv.kernels.cpu_fused.dropout_forward)
against the loops of reference.dropout_forward, its vectorized hash against the
reference's scalar lowbias32, and the statistics of the masks they make.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.kernels import cpu_fused, reference
from dualconv.kernels.cpu_fused import keyed_hash, lowbias32

KEY = 0x0123_4567_89AB_CDEF


def keyed_hash_reference(i: int, key: int) -> int:
    return reference.lowbias32(reference.lowbias32(i ^ (key & 0xFFFFFFFF)) ^ (key >> 32))


def test_lowbias32_and_keyed_hash_match_the_reference() -> None:
    numbers = np.array([0, 1, 2, 3, 1000, 2**31, 2**32 - 1], dtype=np.uint32)
    assert_array_equal(lowbias32(numbers.copy()), [reference.lowbias32(int(i)) for i in numbers])
    assert_array_equal(keyed_hash(numbers, KEY), [keyed_hash_reference(int(i), KEY) for i in numbers])
    assert reference.lowbias32(1) != 1


def stored_alike(a: np.ndarray, b: np.ndarray) -> bool:
    """The same strides on every axis longer than one (a length-1 axis has any stride)."""
    return all(sa == sb for sa, sb, n in zip(a.strides, b.strides, a.shape) if n > 1)


@pytest.mark.parametrize("block", [5, 1 << 16])
@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (4, 7), (1, 6)])
@pytest.mark.parametrize("first_sample", [0, 6])
def test_the_cpu_twin_is_the_reference_in_any_memory_order_and_block(monkeypatch, block: int,
                                                                     shape: tuple[int, ...],
                                                                     first_sample: int) -> None:
    """Mask and y bit for bit the loops', for a C-ordered and a batch-last x, an odd
    batch (the last pair word half used), a part that starts at sample 6, hashed in
    blocks that do not divide the rows (5) or in one block; mask and y stored like x."""
    monkeypatch.setattr(cpu_fused, "DROPOUT_BLOCK", block)
    p = 0.3
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected_y, expected_mask = reference.dropout_forward(x, KEY, p, first_sample)
    assert set(np.unique(expected_mask)) <= {np.float32(0), np.float32(1 / (1 - p))}
    c_ordered = np.ascontiguousarray(x)
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    for stored in (c_ordered, batch_last):
        y, mask = cpu_fused.dropout_forward(stored, KEY, p, first_sample)
        assert mask.dtype == np.float32 and stored_alike(mask, stored) and stored_alike(y, stored)
        assert_array_equal(mask, expected_mask)
        assert_array_equal(y, expected_y)


def test_the_reference_hashes_as_lowbias32_says() -> None:
    """One element worked through the reference's scalar lowbias32: sample 1 (odd: the high
    half) of feature 2, in a batch of 2 samples of 3 features, p = 0.5."""
    x = np.ones((2, 3), dtype=np.float64)
    u = [keyed_hash_reference(i, KEY) for i in range(4)]  # features 0-2, then pair 0
    word = reference.lowbias32(u[2] ^ u[3])
    _, mask = reference.dropout_forward(x, KEY, 0.5, 0)
    assert mask[1, 2] == (2.0 if (word >> 16) >= 2**15 else 0.0)
    assert mask[0, 2] == (2.0 if (word & 0xFFFF) >= 2**15 else 0.0)


def test_p_zero_keeps_everything_and_p_just_below_one_keeps_one_in_65536() -> None:
    """The drop probability is p rounded to a multiple of 2**-16, at most 1 - 2**-16."""
    x = np.ones((4, 300), dtype=np.float32)
    assert (cpu_fused.dropout_forward(x, KEY, 0.0, 0)[1] == 1).all()
    x = np.ones((256, 4096), dtype=np.float32)
    kept = (cpu_fused.dropout_forward(x, KEY, 1 - 1e-9, 0)[1] != 0).mean()
    assert abs(kept - 2**-16) < 5 * np.sqrt(2**-16 / x.size)


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
