"""What the finite-difference gradient tests share: their tolerances and random inputs."""
from __future__ import annotations

import numpy as np

RTOL, ATOL = 1e-5, 1e-7
"""Central differences in float64 with step 1e-6: the truncation error is
O(step^2 * |third derivative|) ~ 1e-12 and the rounding error ~ u * |f| / step
~ 1e-10 for |f| ~ 1, on any machine and in any BLAS summation order (which
moves f by ~1e-16 relative); RTOL and ATOL sit two orders and more above both."""


def randn(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)
