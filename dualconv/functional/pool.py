"""Max- and average-pooling, forward and backward, on either backend.

The window arithmetic lives in the kernels (kernels_numpy.py on the CPU,
kernels/*.cu on the GPU); these functions only pick the implementation.
"""
from __future__ import annotations

from typing import Any

from ..backend import get_array_module
from ..kernels_dispatch import kernels_for


def max_pool2d_forward(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int) -> tuple[Any, Any]:
    """x: (N, C, H, W) -> (y, argmax), both (N, C, out_h, out_w); argmax is int32 ky*kw+kx."""
    return kernels_for(get_array_module(x)).max_pool_forward(x, kh, kw, sy, sx, ph, pw)


def max_pool2d_backward(dy: Any, argmax: Any, H: int, W: int,
                        kh: int, kw: int, sy: int, sx: int, ph: int, pw: int) -> Any:
    """dy: (N, C, out_h, out_w) -> dx: (N, C, H, W), each gradient sent to its window's winner."""
    return kernels_for(get_array_module(dy)).max_pool_backward(dy, argmax, H, W, kh, kw, sy, sx, ph, pw)


def avg_pool2d_forward(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), the window means (padding counts as 0)."""
    return kernels_for(get_array_module(x)).avg_pool_forward(x, kh, kw, sy, sx, ph, pw)


def avg_pool2d_backward(dy: Any, H: int, W: int, kh: int, kw: int, sy: int, sx: int,
                        ph: int, pw: int) -> Any:
    """dy: (N, C, out_h, out_w) -> dx: (N, C, H, W), each gradient spread over its window."""
    return kernels_for(get_array_module(dy)).avg_pool_backward(dy, H, W, kh, kw, sy, sx, ph, pw)
