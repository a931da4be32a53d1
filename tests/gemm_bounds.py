"""Cases and rounding bounds for the GEMM kernels (conv2d_*, dense_*), shared by
tests/test_gemm_twins.py (the CPU twin against the textbook) and
tests/gpu/test_gemm_parity.py (the CUDA twin against the CPU twin).

Every output of these kernels is one dot product (or a sum of a few, folded by
col2im), so each twin lies within gamma(K) times the same sum of |terms| of the
exact value, K the terms it adds (tests/error_bounds.py); two twins differ by at
most twice that. The sums of |terms| come from the textbook twin
(kernels/reference.py) run in float64 on the absolute values.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dualconv.kernels import reference
from dualconv.shapes import Window
from error_bounds import gamma


def conv_case(N: int, C: int, H: int, W: int, O: int, win: Window, bias: bool, dtype: Any,
              seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """x (N, C, H, W), w (O, C, kh, kw), b (O,) or None and gy (N, O, out_h, out_w), normal
    numbers in ``dtype``."""
    rng = np.random.default_rng(seed)
    out_h, out_w = win.out_size(H, W)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, win.kh, win.kw)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    gy = rng.standard_normal((N, O, out_h, out_w)).astype(dtype)
    return x, w, b, gy


def conv_bounds(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, gy: np.ndarray,
                win: Window) -> dict[str, np.ndarray]:
    """One twin's rounding bound on y, gx, gw and gb, in x's dtype."""
    dtype = x.dtype
    O, C, kh, kw = w.shape
    P = gy.size // O  # N*out_h*out_w: the terms of gw's and gb's sums
    a = lambda v: None if v is None else np.abs(v).astype(np.float64)  # noqa: E731
    y, saved = reference.conv2d_forward(a(x), a(w), a(b), win)
    gx, gw, gb = reference.conv2d_backward(a(gy), saved, a(w), win, True, True)
    return {"y": gamma(C * kh * kw + (b is not None), dtype) * y,
            "gx": gamma(O + kh * kw, dtype) * gx,  # O-term products, folded by up to kh*kw adds
            "gw": gamma(P, dtype) * gw, "gb": gamma(P, dtype) * gb}


def dense_case(N: int, features: int, out: int, bias: bool, dtype: Any, seed: int,
               feature_major: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """x (N, features), stored feature-major when asked (as Flatten leaves batch-last
    images), w (features, out), b (out,) or None and gy (N, out)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, features)).astype(dtype)
    if feature_major:
        x = np.asfortranarray(x)
    w = rng.standard_normal((features, out)).astype(dtype)
    b = rng.standard_normal(out).astype(dtype) if bias else None
    gy = rng.standard_normal((N, out)).astype(dtype)
    return x, w, b, gy


def dense_bounds(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                 gy: np.ndarray) -> dict[str, np.ndarray]:
    """One twin's rounding bound on y, gx, gw and gb, in x's dtype."""
    dtype = x.dtype
    N, features = x.shape
    a = lambda v: None if v is None else np.abs(v).astype(np.float64)  # noqa: E731
    y = reference.dense_forward(a(x), a(w), a(b))
    gx, gw, gb = reference.dense_backward(a(gy), a(x), a(w), True, True)
    return {"y": gamma(features + (b is not None), dtype) * y, "gx": gamma(w.shape[1], dtype) * gx,
            "gw": gamma(N, dtype) * gw, "gb": gamma(N, dtype) * gb}
