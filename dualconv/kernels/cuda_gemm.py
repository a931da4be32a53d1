"""The matrix products of the CUDA GEMM twins (cuda_conv.py, cuda_dense.py): cuBLAS, or
the gemm kernel while a captured step is being trained.

CuPy 14 refuses every cuBLAS call while the current stream captures a CUDA graph
(``cupy_backends/cuda/libs/cublas.pyx``, ``setStream``), so a training step captured
whole (dualconv/step_graph.py) makes its products with kernels/gemm.cu instead: each
dot product summed k ascending, a long one in parts of GEMM_CHUNK terms (one thread
each) added in order by a second launch. The step graph turns that on for the
whole fit (``capturable()``), warm-up and eager batches included, so every step of
such a fit computes the same sums whether it ran eagerly or from the graph. It agrees
with cuBLAS within the products' rounding bound, not bit for bit.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

class _State(threading.local):
    """Per thread: whether matmul() launches the gemm kernel (off by default: read as an
    attribute, with no call, once per product)."""

    on = False


_state = _State()


@contextlib.contextmanager
def capturable() -> Iterator[None]:
    """Within the block (this thread), matmul() launches the gemm kernel instead of cuBLAS."""
    before = _state.on
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def matmul(a: Any, b: Any) -> Any:
    """a (M, K) @ b (K, N) on CuPy: cuBLAS, or the gemm kernel inside ``capturable()``."""
    if _state.on:
        from . import gemm
        return gemm(a, b)
    return a @ b
