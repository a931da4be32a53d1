"""kernels/blocked.py: the block products equal one product, within its rounding bound."""
from __future__ import annotations

import numpy as np
import pytest

from dualconv.kernels import blocked
from dualconv.kernels.blocked import block_size, matmul_column_blocks, matmul_inner_blocks, matmul_row_blocks
from error_bounds import assert_within, matmul_bound


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("P", [1, 6, 7, 8, 50])
@pytest.mark.parametrize("split", ["columns", "inner", "rows"])
def test_blocks_equal_the_product(monkeypatch, split: str, dtype: type, P: int) -> None:
    """Blocks of 7: P below, at, just past and well past a block boundary.

    "columns" splits the P output columns of (3 x 5) @ (5 x P); "inner" splits the
    sum over P of (4 x P) @ (P x 3): one partial product, or several added in order;
    "rows" splits the P output rows of (P x 5) @ (5 x 3).
    """
    M, K = {"columns": (3, 5), "inner": (4, 3), "rows": (3, 5)}[split]
    monkeypatch.setattr(blocked, "MIN_BLOCK", 1)
    monkeypatch.setattr(blocked, "BLOCK_MULTIPLY_ADDS", 7 * M * K)
    assert block_size(M, K) == 7
    rng = np.random.default_rng(P)
    if split == "columns":
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((P, K)).astype(dtype).T  # a transposed view, as conv's col.T
        got, shape = matmul_column_blocks(a, b), (M, P)
    elif split == "inner":
        a = rng.standard_normal((M, P)).astype(dtype)
        b = rng.standard_normal((K, P)).astype(dtype).T
        got, shape = matmul_inner_blocks(a, b), (M, K)
    else:
        a = rng.standard_normal((K, P)).astype(dtype).T  # a transposed view, as Dense's x.T
        b = rng.standard_normal((K, M)).astype(dtype)
        got, shape = matmul_row_blocks(a, b), (P, M)
        assert got.flags.c_contiguous
    assert got.shape == shape and got.dtype == dtype
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert_within(got, exact, matmul_bound(a, b) + matmul_bound(a, b, np.float64))


@pytest.mark.parametrize("P", [6, 7, 50])
def test_column_blocks_into_a_given_output(monkeypatch, P: int) -> None:
    """With ``out`` (a buffer of the caller's) the products land there, the
    same numbers as without it (the same calls), and out is what comes back; one call
    (P under a block) too."""
    monkeypatch.setattr(blocked, "MIN_BLOCK", 1)
    monkeypatch.setattr(blocked, "BLOCK_MULTIPLY_ADDS", 7 * 3 * 5)
    rng = np.random.default_rng(P)
    a, b = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal((5, P)).astype(np.float32)
    out = np.full((3, P), np.nan, dtype=np.float32)
    assert matmul_column_blocks(a, b, out=out) is out
    np.testing.assert_array_equal(out, matmul_column_blocks(a, b))


def test_block_size_keeps_blocks_under_the_limit_and_not_narrow() -> None:
    # LeNet conv1 (6 x 25): a few thousand columns, at most 10^6 multiply-adds per block
    assert 6 * 25 * block_size(6, 25) <= blocked.BLOCK_MULTIPLY_ADDS
    assert block_size(6, 25) >= blocked.MIN_BLOCK
    assert block_size(400, 400) is None  # blocks would be narrow: one call


def test_products_too_wide_for_blocks_are_one_call() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 400)), rng.standard_normal((400, 3000))
    assert_within(matmul_column_blocks(a, b), a @ b, 2 * matmul_bound(a, b))
    assert_within(matmul_inner_blocks(b.T, a), b.T @ a, 2 * matmul_bound(b.T, a))
    assert_within(matmul_row_blocks(b.T, a), b.T @ a, 2 * matmul_bound(b.T, a))


def test_inner_blocks_add_the_block_products_in_block_order(monkeypatch) -> None:
    """The batched call gives each block's product as one BLAS call would, and they are
    added first to last, then the leftover columns: the same bits as that loop."""
    monkeypatch.setattr(blocked, "MIN_BLOCK", 1)
    monkeypatch.setattr(blocked, "BLOCK_MULTIPLY_ADDS", 5 * 6 * 3)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, 23)).astype(np.float32), rng.standard_normal((23, 3)).astype(np.float32)
    expected = a[:, 0:5] @ b[0:5]
    for start in range(5, 23, 5):
        expected = expected + a[:, start:start + 5] @ b[start:start + 5]
    np.testing.assert_array_equal(matmul_inner_blocks(a, b), expected)
