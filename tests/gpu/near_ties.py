"""Predicted classes of two computations of the same logits differ only at near-ties.

Each computation's logits are within d = error_bounds.forward_error_bound(model, x) of the
exact ones, so two computations (a GPU's, whose sums CUB and cuBLAS add in their own order,
and the CPU's) differ by at most 2d per logit. With z one side's logits and a = argmax z,
the other side can pick a class c != a only if z[c] + 2 d[c] >= z[a] - 2 d[a]: that sample
is a near-tie. Everywhere else the two must pick the same class.
"""
from __future__ import annotations

import numpy as np


def near_ties(z: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N,) bool: the samples of logits z (N, C), each within d (N, C), whose class another
    computation may pick otherwise (see the module docstring)."""
    rows = np.arange(len(z))
    top = z.argmax(axis=1)
    lowest_top = z[rows, top] - 2 * d[rows, top]
    reach = z + 2 * d
    reach[rows, top] = -np.inf
    return (reach >= lowest_top[:, None]).any(axis=1)


def assert_classes_agree_but_at_near_ties(classes: np.ndarray, z: np.ndarray, d: np.ndarray) -> None:
    """``classes`` (another computation's argmax) equals argmax z wherever the sample is no near-tie."""
    differ = np.asarray(classes) != z.argmax(axis=1)
    outside = np.flatnonzero(differ & ~near_ties(z, d))
    assert outside.size == 0, f"classes differ at samples {outside[:10].tolist()}, which are no near-ties"
