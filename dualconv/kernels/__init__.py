"""The kernels that exist twice, and the one place that picks the CPU or GPU twin.

Thirteen kernels exist twice. Six slide a window: im2col, col2im, and max- and
avg-pool forward and backward. Seven are fused so that a GPU step launches few
kernels (one launch each on the GPU; NumPy expressions on the CPU): sgd_update,
adam_update, softmax_cross_entropy, dropout_forward (Dropout's mask and product),
and the divergence guard's sgd_update_guarded, adam_update_guarded and
flag_nonfinite_loss.
max_pool_values is max_pool_forward without the argmax (eval mode: on the CPU it
skips finding the winners; on the GPU it is the same launch). Everything else in
dualconv is written once against ``xp`` (numpy or cupy).
Open the files in this order:

  reference.py  the textbook: each kernel as plain loops over every index
  cpu.py        the NumPy twins: the same numbers, one loop over kernel offsets
  cuda.py       the CUDA twins: plans and CuPy launches of kernels/*.cu
  launch.py     what a launch is: arguments, memory orders, 32- or 64-bit indices
  sources.py    finds kernels/*.cu and joins them for NVRTC
  checks.py     the input checks, run here before dispatch (and by the CUDA plans)

A layer calls a function below (hop 1), which checks its inputs once and
calls the twin for the arrays' module (hop 2); on the GPU the twin plans and
launches the kernel (hop 3).

The names (N, C, H, W; kh, kw; sy, sx; ph, pw; dy, dx for dilation; gy, gx for
gradients; col; argmax) are Chainer's, tabled once in ARCHITECTURE.md, "Names".

The contract both twins keep: images are indexed (N, C, H, W), columns
(C, kh, kw, N, out_h, out_w); sums visit offsets ky outer, kx inner, from 0.
Memory order, the same on both twins: images are stored batch-last
(C, H, W, N) and columns (C, kh, kw, out_h, out_w, N), and returned as views
indexed as above (layout.py), so the reshapes around a convolution's GEMM and
the pools' inputs cost no copy on either backend. Inputs in another order are
accepted: the CPU twins copy them into batch-last order, the CUDA twins read
them through their strides.

How equal the twins are: the window kernels, the four update and loss-check
kernels and dropout_forward return the same bits on both twins (the CUDA module is compiled with
--fmad=false), with one exception: the GPU flushes float32 subnormals
(|x| < 1.18e-38) to zero (CuPy's -ftz=true, kernels/common.cuh), where NumPy
keeps them. softmax_cross_entropy calls exp and log, which differ between
libraries by up to 2 ulp each, so it agrees within the bound derived in
tests/cuda/test_cuda_fused.py (about (C + 4) eps (1 + |log-sum-exp|) per row).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ..backend import get_array_module
from ..shapes import Window
from . import checks


def twin_for(xp: ModuleType) -> ModuleType:
    """The kernel module for an array module: cpu for numpy, cuda for cupy."""
    if xp is np:
        from . import cpu
        return cpu
    from . import cuda
    return cuda


def _dispatch(kernel: str, *args: Any) -> Any:
    """Check the arguments once (checks.py), then run ``kernel`` on the twin that
    matches the first array: cpu for NumPy, cuda for CuPy."""
    getattr(checks, kernel)(*args)
    return getattr(twin_for(get_array_module(args[0])), kernel)(*args)


def im2col(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w)."""
    return _dispatch("im2col", x, win)


def col2im(col: Any, H: int, W: int, win: Window) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W), overlaps summed."""
    return _dispatch("col2im", col, H, W, win)


def max_pool_forward(x: Any, win: Window) -> tuple[Any, Any]:
    """x: (N, C, H, W) -> (y, argmax), both (N, C, out_h, out_w)."""
    return _dispatch("max_pool_forward", x, win)


def max_pool_values(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), max_pool_forward's maxima without the
    argmax (inference: on the CPU it skips finding the winners; on the GPU the same launch)."""
    return _dispatch("max_pool_values", x, win)


def max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Any:
    """gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W)."""
    return _dispatch("max_pool_backward", gy, argmax, H, W, win)


def avg_pool_forward(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), the window means (padding counts as 0)."""
    return _dispatch("avg_pool_forward", x, win)


def avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Any:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W), each gradient spread over its window."""
    return _dispatch("avg_pool_backward", gy, H, W, win)


def sgd_update(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
               weight_decay: float, nesterov: bool) -> None:
    """One SGD step on w in place, and on its velocity v (None when momentum is 0)."""
    _dispatch("sgd_update", w, g, v, lr, momentum, weight_decay, nesterov)


def adam_update(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                eps: float, weight_decay: float, step: int) -> None:
    """One Adam step (``step`` counts from 1) on w and its moments m, v in place."""
    _dispatch("adam_update", w, g, m, v, lr, b1, b2, eps, weight_decay, step)


def sgd_update_guarded(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                       verdict: Any, code: int, lr: float, momentum: float, weight_decay: float,
                       nesterov: bool) -> None:
    """sgd_update under fit's divergence guard (divergence.py): runs only while
    verdict[0] > code, first copies w (and v) into w_last (v_last), and sets
    verdict[0] = code + 1 when a result is not finite. verdict: int32 (1,)."""
    _dispatch("sgd_update_guarded", w, g, v, w_last, v_last, verdict, code, lr, momentum,
              weight_decay, nesterov)


def adam_update_guarded(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                        verdict: Any, code: int, lr: float, b1: float, b2: float, eps: float,
                        weight_decay: float, step: int) -> None:
    """adam_update under fit's divergence guard, as sgd_update_guarded."""
    _dispatch("adam_update_guarded", w, g, m, v, w_last, m_last, v_last, verdict, code, lr, b1,
              b2, eps, weight_decay, step)


def flag_nonfinite_loss(loss: Any, verdict: Any, code: int) -> None:
    """The divergence guard's loss check: verdict[0] = code when the scalar loss is NaN
    or infinite and verdict[0] > code (no earlier step failed)."""
    _dispatch("flag_nonfinite_loss", loss, verdict, code)


def dropout_forward(x: Any, key: int, p: float, first_sample: int) -> tuple[Any, Any]:
    """x: (N, ...) -> (y, mask) shaped like x: inverted dropout with the counter-based
    mask of key (reference.dropout_forward), samples counted from first_sample (even)."""
    return _dispatch("dropout_forward", x, key, p, first_sample)


def softmax_cross_entropy(z: Any, labels: Any) -> tuple[Any, Any]:
    """z: logits (N, C), labels: ints (N,) -> (loss (N,) per row, gz (N, C), the
    gradient of loss.mean())."""
    return _dispatch("softmax_cross_entropy", z, labels)
