"""The CUDA twin of Dense's GEMMs: dense_forward and dense_backward on CuPy.

The contract (dualconv.kernels) is the CPU twin's (cpu_dense.py): x (N, in),
w (in, out), b (out,) or None -> y = x @ w + b; the backward gives gx = gy @ w.T,
gw = x.T @ gy, gb = the sum of gy over the batch. Each product is one cuBLAS
call (it is fastest with the whole matrix), so this twin agrees with the CPU
twin within the products' rounding bound. A feature-major x (F-ordered (N, in),
the Flatten of batch-last images) gets its gx stored the same way, as on the
CPU. Inputs are checked once, by the dispatch point; these functions trust
their arguments.
"""
from __future__ import annotations

from typing import Any

from .cuda_gemm import matmul


def dense_forward(x: Any, w: Any, b: Any | None) -> Any:
    """x: (N, in), w: (in, out), b: (out,) or None -> y = x @ w + b: (N, out)."""
    y = matmul(x, w)
    if b is not None:
        y += b
    return y


def dense_backward(gy: Any, x: Any, w: Any, need_gx: bool,
                   need_gb: bool) -> tuple[Any | None, Any, Any | None]:
    """gy: (N, out), the forward's x (N, in), w (in, out) -> (gx (N, in) or None,
    gw (in, out), gb (out,) or None); a feature-major x gets gx = (w @ gy.T).T, stored as x is."""
    gw = matmul(x.T, gy)
    gb = gy.sum(axis=0) if need_gb else None
    if not need_gx:
        return None, gw, gb
    gx = matmul(w, gy.T).T if x.flags.f_contiguous and not x.flags.c_contiguous else matmul(gy, w.T)
    return gx, gw, gb
