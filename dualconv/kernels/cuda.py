"""The CUDA twins: the kernels of kernels/*.cu, planned here and launched through CuPy.

Same functions, same arguments and same memory orders as cpu.py, on cupy
arrays, with results bitwise equal to it (see the rules in
kernels/common.cuh): images are stored batch-last (C, H, W, N) and columns
(C, kh, kw, out_h, out_w, N), and returned as the same (N, C, H, W) and
(C, kh, kw, N, out_h, out_w) views. Image inputs are read through their
strides, so a batch-first or batch-last array costs no copy.

* plans: ``plan_<kernel>(...)`` take the kernel function's arguments but read
  only ``.shape``, ``.strides`` and ``.dtype`` of the arrays, run the same
  check as the dispatch point (checks.py), pick the 32- or 64-bit
  instantiation (launch.index_dtype), and return a ``Launch``. They need no
  CuPy, so the CPU emulation launches exactly what CuPy does;
* launch: each kernel function is ``execute(plan_<kernel>(...), cupy, ...)``.

CuPy is imported only when a kernel runs, so this module imports without it.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Sequence

import numpy as np

from ..layout import (BATCH_FIRST, BATCH_LAST, COLUMNS_BATCH_FIRST, COLUMNS_BATCH_LAST, batch_first_axes,
                      batch_last_axes)
from ..shapes import Window
from . import checks
from .launch import (Input, Launch, Output, as_laid_out, element_strides, execute, index_dtype,
                     launch_1d, magic)
from .launch import BLOCK, MAX_GRID  # noqa: F401  (part of this module's interface, as before)
from .sources import module_source

FLOAT_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
"""The float dtypes the kernels are instantiated for, and their C names."""

INDEX_TYPES = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}
"""The index types: 32-bit whenever every index fits (launch.index_dtype)."""

POOL_SIDES = (0, 2)
"""Pooling kernels are compiled for any window (0) and for 2x2 (2, unrolled)."""

TEMPLATES = {
    "im2col": "T, I", "col2im": "T, I",
    "max_pool_forward": "T, I, K", "max_pool_backward": "T, I, K",
    "avg_pool_forward": "T, I, K", "avg_pool_backward": "T, I, K",
    "sgd_update": "T, I", "adam_update": "T, I",
    "softmax_cross_entropy": "T, L, I", "dropout_forward": "T, I",
    "sgd_update_guarded": "T, I", "adam_update_guarded": "T, I", "flag_nonfinite_loss": "T",
}
"""Every __global__ template in kernels/*.cu, with its template parameters:
T float type, I index type, K pooling window side, L label type (long long)."""

KERNELS = tuple(TEMPLATES)


def _instantiations(kernel: str) -> list[str]:
    names = []
    for t in FLOAT_TYPES.values():
        for i in INDEX_TYPES.values():
            params = {"T": [t], "I": [i], "K": [str(k) for k in POOL_SIDES], "L": ["long long"]}
            combos: list[list[str]] = [[]]
            for p in TEMPLATES[kernel].split(", "):
                combos = [c + [v] for c in combos for v in params[p]]
            names.extend(f"{kernel}<{', '.join(c)}>" for c in combos)
    return list(dict.fromkeys(names))  # once each, for a kernel without an index type


NAME_EXPRESSIONS = tuple(n for k in KERNELS for n in _instantiations(k))
"""The instantiations compiled into the module, e.g. "im2col<float, int>"."""

COMPILE_OPTIONS = ("--std=c++17", "--fmad=false")
"""NVRTC options (CuPy adds -ftz=true and the architecture); the compile-check
test uses them too. ``--fmad=false``: no a*b + c is contracted into an FMA, so
the fused optimizer kernels round each operation as NumPy does (bitwise parity)."""


# ---------------------------------------------------------------- plans

def _window_launch(kernel: str, dtype: np.dtype, total: int, arrays: Sequence[Any],
                   image: Input | None, nchw: tuple[int, int, int, int], win: Window,
                   out: tuple[int, int], extents: Sequence[int], side: int | None = None) -> Launch:
    """A window kernel's launch: its arrays, then DC_WINDOW_PARAMS (common.cuh)."""
    N, C, H, W = nchw
    padded = C * (H + 2 * win.ph + win.kh * win.dy) * (W + 2 * win.pw + win.kw * win.dx) * N
    itype = index_dtype([*extents, padded], total)
    strides = element_strides(image) if image is not None else (0, 0, 0, 0)
    divisors = (N, H, W, *out, win.kh, win.kw, win.sy, win.sx)
    # An empty batch runs no thread: any divisor will do for it.
    magics = [magic(max(d, 1)) if itype == np.int32 else np.uint64(0) for d in divisors]
    scalars = [itype.type(v) for v in (total, N, C, H, W, *win, *out, *strides)]
    template = f"{FLOAT_TYPES[dtype]}, {INDEX_TYPES[itype]}" + ("" if side is None else f", {side}")
    return launch_1d(f"{kernel}<{template}>", total, (*arrays, *scalars, *magics))


def _side(win: Window) -> int:
    """The compiled pooling window for win: 2 for 2x2, else 0 (any)."""
    return win.kh if win.kh == win.kw and win.kh in POOL_SIDES else 0


def plan_im2col(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w); one thread per col element."""
    out = checks.im2col(x, win)
    N, C, H, W = x.shape
    image = as_laid_out(x, BATCH_LAST)
    col = Output((C, win.kh, win.kw, *out, N), np.dtype(x.dtype), COLUMNS_BATCH_FIRST)
    total = C * win.kh * win.kw * out[0] * out[1] * N
    return _window_launch("im2col", col.dtype, total, (image, col), image, (N, C, H, W), win,
                          out, [N * C * H * W])


def plan_col2im(col: Any, H: int, W: int, win: Window) -> Launch:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W); one thread per pixel."""
    out = checks.col2im(col, H, W, win)
    C, _, _, N, _, _ = col.shape
    x = Output((C, H, W, N), np.dtype(col.dtype), BATCH_FIRST)
    return _window_launch("col2im", x.dtype, C * H * W * N, (Input(col, COLUMNS_BATCH_LAST), x),
                          None, (N, C, H, W), win, out, [int(np.prod(col.shape))])


def plan_max_pool_forward(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> y, argmax (int32): (N, C, out_h, out_w); one thread per output."""
    out = checks.max_pool_forward(x, win)
    N, C, H, W = x.shape
    image = as_laid_out(x, BATCH_LAST)
    y = Output((C, *out, N), np.dtype(x.dtype), BATCH_FIRST)
    argmax = Output((C, *out, N), np.dtype(np.int32), BATCH_FIRST)
    return _window_launch("max_pool_forward", y.dtype, C * out[0] * out[1] * N, (image, y, argmax),
                          image, (N, C, H, W), win, out, [N * C * H * W], _side(win))


def plan_max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Launch:
    """gy, argmax (int32): (N, C, out_h, out_w) -> gx: (N, C, H, W); one thread per pixel."""
    out = checks.max_pool_backward(gy, argmax, H, W, win)
    N, C = gy.shape[:2]
    grad = as_laid_out(gy, BATCH_LAST)
    gx = Output((C, H, W, N), np.dtype(gy.dtype), BATCH_FIRST)
    return _window_launch("max_pool_backward", gx.dtype, C * H * W * N,
                          (grad, Input(argmax, BATCH_LAST), gx), grad, (N, C, H, W), win, out,
                          [N * C * out[0] * out[1]], _side(win))


def plan_avg_pool_forward(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); one thread per output."""
    out = checks.avg_pool_forward(x, win)
    N, C, H, W = x.shape
    image = as_laid_out(x, BATCH_LAST)
    y = Output((C, *out, N), np.dtype(x.dtype), BATCH_FIRST)
    return _window_launch("avg_pool_forward", y.dtype, C * out[0] * out[1] * N, (image, y), image,
                          (N, C, H, W), win, out, [N * C * H * W], _side(win))


def plan_avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Launch:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W); one thread per pixel."""
    out = checks.avg_pool_backward(gy, H, W, win)
    N, C = gy.shape[:2]
    grad = as_laid_out(gy, BATCH_LAST)
    gx = Output((C, H, W, N), np.dtype(gy.dtype), BATCH_FIRST)
    return _window_launch("avg_pool_backward", gx.dtype, C * H * W * N, (grad, gx), grad,
                          (N, C, H, W), win, out, [N * C * out[0] * out[1]], _side(win))


def _elementwise(kernel: str, arrays: dict[str, Any],
                 scalars: Sequence[float | bool | np.int32]) -> Launch:
    """A fused update in place, one thread per element, of arrays that passed the
    kernel's check. The gradient g is only read (laid out C-contiguous if it is
    not); the others must be C-contiguous already, since a copy would lose the update.
    Scalars become the arrays' float type, except bools and np.int32 (C ints)."""
    args = []
    for name, a in arrays.items():
        if name == "g":
            args.append(Input(a, tuple(range(a.ndim))))
        elif a.flags.c_contiguous:
            args.append(a)
        else:
            raise ValueError(f"{kernel}: {name} must be C-contiguous (it is updated in place)")
    first = next(iter(arrays.values()))
    dtype = np.dtype(first.dtype)
    n = int(np.prod(first.shape, dtype=np.int64))
    itype = index_dtype([n], n)
    values = [np.int32(v) if isinstance(v, (bool, np.int32)) else dtype.type(v) for v in scalars]
    return launch_1d(f"{kernel}<{FLOAT_TYPES[dtype]}, {INDEX_TYPES[itype]}>", n,
                     (*args, itype.type(n), *values))


def plan_sgd_update(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
                    weight_decay: float, nesterov: bool) -> Launch:
    """Updates w, and the velocity v unless momentum is 0 (v may then be None), in place."""
    checks.sgd_update(w, g, v, lr, momentum, weight_decay, nesterov)
    arrays = dict(w=w, g=g, v=w if v is None else v)  # v is not read when momentum is 0
    return _elementwise("sgd_update", arrays, (lr, momentum, weight_decay, bool(nesterov)))


def plan_adam_update(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                     eps: float, weight_decay: float, step: int) -> Launch:
    """Updates w and the moments m, v in place for Adam's step ``step`` (from 1)."""
    checks.adam_update(w, g, m, v, lr, b1, b2, eps, weight_decay, step)
    return _elementwise("adam_update", dict(w=w, g=g, m=m, v=v),
                        (lr, b1, b2, 1 - b1, 1 - b2, 1 - b1 ** step, 1 - b2 ** step, eps,
                         weight_decay))


def plan_sgd_update_guarded(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                            verdict: Any, code: int, lr: float, momentum: float,
                            weight_decay: float, nesterov: bool) -> Launch:
    """sgd_update under fit's divergence guard: skips unless verdict > code, first
    copies w (and v) into w_last (v_last), flags a non-finite result (optimizers.cu)."""
    checks.sgd_update_guarded(w, g, v, w_last, v_last, verdict, code, lr, momentum,
                              weight_decay, nesterov)
    v, v_last = (w, w_last) if v is None else (v, v_last)  # neither is touched when momentum is 0
    arrays = dict(w=w, g=g, v=v, w_last=w_last, v_last=v_last)
    return _with_verdict(_elementwise("sgd_update_guarded", arrays,
                                      (lr, momentum, weight_decay, bool(nesterov))),
                         len(arrays), verdict, code)


def plan_adam_update_guarded(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any,
                             v_last: Any, verdict: Any, code: int, lr: float, b1: float,
                             b2: float, eps: float, weight_decay: float, step: int) -> Launch:
    """adam_update under fit's divergence guard (see plan_sgd_update_guarded)."""
    checks.adam_update_guarded(w, g, m, v, w_last, m_last, v_last, verdict, code, lr, b1, b2,
                               eps, weight_decay, step)
    arrays = dict(w=w, g=g, m=m, v=v, w_last=w_last, m_last=m_last, v_last=v_last)
    return _with_verdict(_elementwise("adam_update_guarded", arrays,
                                      (lr, b1, b2, 1 - b1, 1 - b2, 1 - b1 ** step,
                                       1 - b2 ** step, eps, weight_decay)),
                         len(arrays), verdict, code)


def _with_verdict(launch: Launch, arrays: int, verdict: Any, code: int) -> Launch:
    """``launch`` with the guard's verdict after its arrays and its step code last."""
    args = launch.args
    return dataclasses.replace(launch, args=(*args[:arrays], verdict, *args[arrays:],
                                             np.int32(code)))


def plan_flag_nonfinite_loss(loss: Any, verdict: Any, code: int) -> Launch:
    """loss: a float scalar (0-d); sets verdict to code when it is NaN or infinite and
    no earlier step failed. One thread."""
    checks.flag_nonfinite_loss(loss, verdict, code)
    return launch_1d(f"flag_nonfinite_loss<{FLOAT_TYPES[np.dtype(loss.dtype)]}>", 1,
                     (loss, verdict, np.int32(code)))


def plan_softmax_cross_entropy(z: Any, labels: Any) -> Launch:
    """z: (N, C) logits, labels: int64 (N,) -> loss (N,), gz (N, C); one thread per row."""
    checks.softmax_cross_entropy(z, labels)
    if np.dtype(labels.dtype) != np.int64:
        raise TypeError(f"softmax_cross_entropy: the kernel reads int64 labels, got "
                        f"{np.dtype(labels.dtype)} (softmax_cross_entropy() converts them)")
    N, C = z.shape
    dtype = np.dtype(z.dtype)
    itype = index_dtype([N * C], N)
    return launch_1d(f"softmax_cross_entropy<{FLOAT_TYPES[dtype]}, long long, "
                     f"{INDEX_TYPES[itype]}>", N,
                     (Input(z, (0, 1)), Input(labels, (0,)), Output((N,), dtype),
                      Output((N, C), dtype), itype.type(N), itype.type(C)))


def plan_dropout_forward(x: Any, key: int, p: float, first_sample: int) -> Launch:
    """x: (N, ...) -> y, mask shaped like x, computed batch-last (features, N);
    one thread per element."""
    checks.dropout_forward(x, key, p, first_sample)
    N, features = x.shape[0], tuple(x.shape[1:])
    F = int(np.prod(features, dtype=np.int64))
    dtype = np.dtype(x.dtype)
    total = F * N
    itype = index_dtype([total], total)
    threshold = min(2**16 - 1, round(p * 2**16))
    back = batch_first_axes(x.ndim)
    return launch_1d(f"dropout_forward<{FLOAT_TYPES[dtype]}, {INDEX_TYPES[itype]}>", total,
                     (Input(x, batch_last_axes(x.ndim)), Output((*features, N), dtype, back),
                      Output((*features, N), dtype, back), itype.type(total), itype.type(N),
                      np.uint32(F), np.uint32(first_sample // 2), np.uint32(key & 0xFFFFFFFF),
                      np.uint32(key >> 32), np.uint32(threshold), dtype.type(1.0 / (1.0 - p))))


PLANS: dict[str, Callable[..., Launch]] = {
    "im2col": plan_im2col,
    "col2im": plan_col2im,
    "max_pool_forward": plan_max_pool_forward,
    "max_pool_backward": plan_max_pool_backward,
    "avg_pool_forward": plan_avg_pool_forward,
    "avg_pool_backward": plan_avg_pool_backward,
    "sgd_update": plan_sgd_update,
    "adam_update": plan_adam_update,
    "softmax_cross_entropy": plan_softmax_cross_entropy,
    "sgd_update_guarded": plan_sgd_update_guarded,
    "adam_update_guarded": plan_adam_update_guarded,
    "flag_nonfinite_loss": plan_flag_nonfinite_loss,
    "dropout_forward": plan_dropout_forward,
}
"""Kernel name -> its plan function (same arguments as the kernel function)."""


# ---------------------------------------------------------------- CuPy

_modules: dict[tuple[int, int], Any] = {}
_functions: dict[tuple[int, int, str], Any] = {}
_modules_lock = threading.Lock()


def get_module() -> Any:
    """The cupy.RawModule of every kernel for the current device, compiled once."""
    import cupy

    key = (id(cupy), cupy.cuda.runtime.getDevice())  # the CuPy module too: the stand-in is another
    with _modules_lock:
        module = _modules.get(key)
        if module is None:
            module = cupy.RawModule(code=module_source(), options=COMPILE_OPTIONS,
                                    name_expressions=NAME_EXPRESSIONS)
            module.compile()  # surface compile errors (with file:line) here
            _modules[key] = module
    return module


def get_function(name: str) -> Any:
    """The kernel ``name`` for the current device, looked up once (each lookup is a driver call)."""
    import cupy

    key = (id(cupy), cupy.cuda.runtime.getDevice(), name)
    function = _functions.get(key)
    if function is None:
        function = _functions[key] = get_module().get_function(name)
    return function


def _cupy_call(launch: Launch, args: tuple[Any, ...]) -> None:
    get_function(launch.name)(launch.grid, launch.block, args)


def _run(launch: Launch) -> Any:
    import cupy

    return execute(launch, cupy, _cupy_call)


def im2col(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w); see cpu.im2col."""
    return _run(plan_im2col(x, win))


def col2im(col: Any, H: int, W: int, win: Window) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W); see cpu.col2im."""
    return _run(plan_col2im(col, H, W, win))


def max_pool_forward(x: Any, win: Window) -> tuple[Any, Any]:
    """x: (N, C, H, W) -> (y, argmax int32), both (N, C, out_h, out_w); see cpu.max_pool_forward."""
    return _run(plan_max_pool_forward(x, win))


def max_pool_values(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), the maxima alone: max_pool_forward's
    one launch, which writes the argmax as it goes (dropping it saves no launch)."""
    return max_pool_forward(x, win)[0]


def max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Any:
    """gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W); see cpu.max_pool_backward."""
    return _run(plan_max_pool_backward(gy, argmax, H, W, win))


def avg_pool_forward(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); see cpu.avg_pool_forward."""
    return _run(plan_avg_pool_forward(x, win))


def avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Any:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W); see cpu.avg_pool_backward."""
    return _run(plan_avg_pool_backward(gy, H, W, win))


def sgd_update(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
               weight_decay: float, nesterov: bool) -> None:
    """One SGD step in place, one launch; see cpu.sgd_update."""
    _run(plan_sgd_update(w, g, v, lr, momentum, weight_decay, nesterov))


def adam_update(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                eps: float, weight_decay: float, step: int) -> None:
    """One Adam step in place, one launch; see cpu.adam_update."""
    _run(plan_adam_update(w, g, m, v, lr, b1, b2, eps, weight_decay, step))


def softmax_cross_entropy(z: Any, labels: Any) -> tuple[Any, Any]:
    """z: (N, C), labels: int (N,) -> (loss (N,), gz (N, C)), one launch (labels of
    another integer dtype are converted first); see cpu.softmax_cross_entropy."""
    if np.dtype(labels.dtype) != np.int64:
        labels = labels.astype(np.int64)
    return _run(plan_softmax_cross_entropy(z, labels))


def dropout_forward(x: Any, key: int, p: float, first_sample: int) -> tuple[Any, Any]:
    """Dropout's mask and product, one launch; see cpu.dropout_forward."""
    return _run(plan_dropout_forward(x, key, p, first_sample))


def sgd_update_guarded(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                       verdict: Any, code: int, lr: float, momentum: float, weight_decay: float,
                       nesterov: bool) -> None:
    """One guarded SGD step in place, one launch; see cpu.sgd_update_guarded."""
    _run(plan_sgd_update_guarded(w, g, v, w_last, v_last, verdict, code, lr, momentum,
                                 weight_decay, nesterov))


def adam_update_guarded(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                        verdict: Any, code: int, lr: float, b1: float, b2: float, eps: float,
                        weight_decay: float, step: int) -> None:
    """One guarded Adam step in place, one launch; see cpu.adam_update_guarded."""
    _run(plan_adam_update_guarded(w, g, m, v, w_last, m_last, v_last, verdict, code, lr, b1,
                                  b2, eps, weight_decay, step))


def flag_nonfinite_loss(loss: Any, verdict: Any, code: int) -> None:
    """The guard's check of a step's loss, one launch; see cpu.flag_nonfinite_loss."""
    _run(plan_flag_nonfinite_loss(loss, verdict, code))
