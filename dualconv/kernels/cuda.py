"""The CUDA twins: the kernels of kernels/*.cu, planned here and launched through CuPy.

Same functions, same arguments as cpu.py, on cupy arrays, with results
bitwise equal to it (see the rules in kernels/common.cuh). The .cu files are
found and joined into one translation unit by sources.py.

* plans: ``plan_<kernel>(...)`` take the kernel function's arguments but read
  only ``.shape`` / ``.dtype`` of the arrays, run the same check as the
  dispatch point (checks.py), and return a ``Launch`` (kernel name, grid,
  block, arguments). They are pure Python and need no CuPy, so the CPU
  emulation in tests/cuda/ launches exactly what CuPy does;
* launch: the six kernel functions, each ``execute(plan_<kernel>(...), cupy, ...)``.

CuPy is imported only when a kernel runs, so this module imports without it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..shapes import Window
from . import checks
from .sources import module_source

KERNELS = ("im2col", "col2im", "max_pool_forward", "max_pool_backward",
           "avg_pool_forward", "avg_pool_backward")
"""Every __global__ template in kernels/*.cu."""

CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
"""The dtypes the kernels are instantiated for, and their C names."""

NAME_EXPRESSIONS = tuple(f"{k}<{t}>" for k in KERNELS for t in CTYPES.values())
"""The instantiations compiled into the module, e.g. "im2col<float>"."""

COMPILE_OPTIONS = ("--std=c++17",)
"""NVRTC options (CuPy adds the architecture); the compile-check test uses them too."""

BLOCK = 256
"""Threads per block."""

MAX_GRID = 65535
"""Most blocks a launch asks for; grid-stride loops cover any remainder."""


# ---------------------------------------------------------------- plans

@dataclass(frozen=True)
class Output:
    """An output buffer the launcher allocates (C-contiguous, uninitialized)."""
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class Launch:
    """One kernel launch: ``name<<<grid, block>>>(*args)``.

    args are, in the kernel's parameter order: input arrays (anything with
    .shape/.dtype; the launcher makes them contiguous), ``Output`` buffers, and
    np.int64 scalars for the ``long long`` parameters.
    """
    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Any, ...]

    @property
    def outputs(self) -> tuple[Output, ...]:
        return tuple(a for a in self.args if isinstance(a, Output))


def _launch(kernel: str, dtype: np.dtype, work: int, args: Sequence[Any]) -> Launch:
    """A 1-D launch of ``kernel<ctype>`` with one thread per work item."""
    blocks = min(MAX_GRID, max(1, -(-work // BLOCK)))
    return Launch(f"{kernel}<{CTYPES[dtype]}>", (blocks, 1, 1), (BLOCK, 1, 1), tuple(args))


def _geometry(N: int, C: int, H: int, W: int, win: Window,
              out: tuple[int, int]) -> tuple[np.int64, ...]:
    """The 14 geometry arguments every kernel takes (kernels/common.cuh), as np.int64."""
    return tuple(np.int64(v) for v in (N, C, H, W, *win, *out))


def plan_im2col(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w); one thread per col element."""
    out_h, out_w = checks.im2col(x, win)
    N, C, H, W = x.shape
    col = Output((C, win.kh, win.kw, N, out_h, out_w), np.dtype(x.dtype))
    return _launch("im2col", col.dtype, C * win.kh * win.kw * N * out_h * out_w,
                   (x, col, *_geometry(N, C, H, W, win, (out_h, out_w))))


def plan_col2im(col: Any, H: int, W: int, win: Window) -> Launch:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W); one thread per pixel."""
    out = checks.col2im(col, H, W, win)
    C, _, _, N, _, _ = col.shape
    x = Output((N, C, H, W), np.dtype(col.dtype))
    return _launch("col2im", x.dtype, N * C * H * W, (col, x, *_geometry(N, C, H, W, win, out)))


def plan_max_pool_forward(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> y, argmax (int32): (N, C, out_h, out_w); one thread per output."""
    out = checks.max_pool_forward(x, win)
    N, C, H, W = x.shape
    y = Output((N, C, *out), np.dtype(x.dtype))
    argmax = Output((N, C, *out), np.dtype(np.int32))
    return _launch("max_pool_forward", y.dtype, N * C * out[0] * out[1],
                   (x, y, argmax, *_geometry(N, C, H, W, win, out)))


def plan_max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Launch:
    """gy, argmax (int32): (N, C, out_h, out_w) -> gx: (N, C, H, W); one thread per pixel."""
    out = checks.max_pool_backward(gy, argmax, H, W, win)
    N, C = gy.shape[:2]
    gx = Output((N, C, H, W), np.dtype(gy.dtype))
    return _launch("max_pool_backward", gx.dtype, N * C * H * W,
                   (gy, argmax, gx, *_geometry(N, C, H, W, win, out)))


def plan_avg_pool_forward(x: Any, win: Window) -> Launch:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); one thread per output."""
    out = checks.avg_pool_forward(x, win)
    N, C, H, W = x.shape
    y = Output((N, C, *out), np.dtype(x.dtype))
    return _launch("avg_pool_forward", y.dtype, N * C * out[0] * out[1],
                   (x, y, *_geometry(N, C, H, W, win, out)))


def plan_avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Launch:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W); one thread per pixel."""
    out = checks.avg_pool_backward(gy, H, W, win)
    N, C = gy.shape[:2]
    gx = Output((N, C, H, W), np.dtype(gy.dtype))
    return _launch("avg_pool_backward", gx.dtype, N * C * H * W,
                   (gy, gx, *_geometry(N, C, H, W, win, out)))


PLANS: dict[str, Callable[..., Launch]] = {
    "im2col": plan_im2col,
    "col2im": plan_col2im,
    "max_pool_forward": plan_max_pool_forward,
    "max_pool_backward": plan_max_pool_backward,
    "avg_pool_forward": plan_avg_pool_forward,
    "avg_pool_backward": plan_avg_pool_backward,
}
"""Kernel name -> its plan function (same arguments as the kernel function)."""


def execute(launch: Launch, xp: Any, call: Callable[[Launch, tuple[Any, ...]], None]) -> Any:
    """Run a plan: make inputs contiguous, allocate outputs with ``xp``, then
    ``call(launch, args)``. Returns the outputs as cpu.py does (one
    array, or a tuple of them). Shared by CuPy and the CPU emulation."""
    args: list[Any] = []
    outputs: list[Any] = []
    for a in launch.args:
        if isinstance(a, Output):
            buf = xp.empty(a.shape, dtype=a.dtype)
            outputs.append(buf)
            args.append(buf)
        elif isinstance(a, np.generic):
            args.append(a)
        else:
            args.append(xp.ascontiguousarray(a))
    call(launch, tuple(args))
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


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


def max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Any:
    """gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W); see cpu.max_pool_backward."""
    return _run(plan_max_pool_backward(gy, argmax, H, W, win))


def avg_pool_forward(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); see cpu.avg_pool_forward."""
    return _run(plan_avg_pool_forward(x, win))


def avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Any:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W); see cpu.avg_pool_backward."""
    return _run(plan_avg_pool_backward(gy, H, W, win))
