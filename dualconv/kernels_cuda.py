"""The CUDA kernels (kernels/*.cu), launched through CuPy.

Same functions, same signatures as kernels_numpy.py, on cupy arrays; the
results are bitwise equal to it (see the rules in kernels/common.cuh).

The file has three layers:

* sources: ``kernel_sources()`` finds kernels/*.cu (inside the installed
  package ``dualconv.kernels``, or the source tree's kernels/ directory) and
  ``module_source()`` joins them into one translation unit;
* plans: ``plan_<kernel>(...)`` take the same arguments as the kernel function
  but only read ``.shape`` / ``.dtype`` of the arrays, and return a ``Launch``
  (kernel name, grid, block, arguments). They are pure Python and cupy-free,
  so the CPU emulation harness in tests/cuda/ launches exactly what CuPy does;
* launch: the six kernel functions, each ``execute(plan_...(...), cupy, ...)``.

CuPy is imported only when a kernel runs, so this module imports without it.
"""
from __future__ import annotations

import importlib.resources
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .shapes import get_conv_outsize

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


# ---------------------------------------------------------------- sources

def _kernel_dir() -> Any:
    """The directory holding the .cu files: a Traversable (installed) or a Path."""
    try:
        installed = importlib.resources.files("dualconv.kernels")
        if any(entry.name.endswith(".cu") for entry in installed.iterdir()):
            return installed
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "kernels"


def kernel_sources() -> dict[str, Any]:
    """{file name: Traversable} for every kernels/*.cu and *.cuh, sorted by name."""
    root = _kernel_dir()
    found = {e.name: e for e in root.iterdir() if e.name.endswith((".cu", ".cuh"))}
    if not any(name.endswith(".cu") for name in found):
        raise FileNotFoundError(f"no CUDA kernel sources (*.cu) found in {root}")
    return dict(sorted(found.items()))


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def module_source() -> str:
    """Every kernels/*.cu joined into one translation unit.

    ``#include "x.cuh"`` is replaced by the header's text (once), and ``#line``
    directives keep the original file names and line numbers, so compiler
    messages read like ``"im2col.cu"(12): error ...``.
    """
    sources = kernel_sources()
    included: set[str] = set()

    def expand(name: str) -> list[str]:
        out = [f'#line 1 "{name}"']
        for lineno, line in enumerate(sources[name].read_text().splitlines(), start=1):
            match = _INCLUDE.match(line)
            if match is None:
                out.append(line)
                continue
            header = match.group(1)
            if header not in sources:
                raise FileNotFoundError(f'{name}:{lineno}: #include "{header}" not in kernels/')
            if header not in included:
                included.add(header)
                out.extend(expand(header))
            out.append(f'#line {lineno + 1} "{name}"')
        return out

    lines: list[str] = []
    for name in sources:
        if name.endswith(".cu"):
            lines.extend(expand(name))
    return "\n".join(lines) + "\n"


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


def _float_dtype(a: Any, what: str) -> np.dtype:
    dtype = np.dtype(a.dtype)
    if dtype not in CTYPES:
        raise TypeError(f"{what} must be float32 or float64, got {dtype}")
    return dtype


def _geometry(N: int, C: int, H: int, W: int, kh: int, kw: int, sy: int, sx: int,
              ph: int, pw: int, dy: int, dx: int) -> tuple[int, int, tuple[np.int64, ...]]:
    """(out_h, out_w, the 14 geometry arguments every kernel takes, as np.int64)."""
    for name, v in dict(kh=kh, kw=kw, sy=sy, sx=sx, dy=dy, dx=dx).items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got ({ph}, {pw})")
    out_h = get_conv_outsize(H, kh, sy, ph, dy)
    out_w = get_conv_outsize(W, kw, sx, pw, dx)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"window ({kh}, {kw}) dilation ({dy}, {dx}) padding ({ph}, {pw}) "
                         f"does not fit input ({H}, {W}): output would be ({out_h}, {out_w})")
    values = (N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w)
    return out_h, out_w, tuple(np.int64(v) for v in values)


def _check_pooled(a: Any, what: str, N: int, C: int, out_h: int, out_w: int) -> None:
    if tuple(a.shape) != (N, C, out_h, out_w):
        raise ValueError(f"{what} must have shape {(N, C, out_h, out_w)}, got {tuple(a.shape)}")


def plan_im2col(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                dy: int = 1, dx: int = 1) -> Launch:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w); one thread per col element."""
    dtype = _float_dtype(x, "x")
    N, C, H, W = x.shape
    out_h, out_w, geo = _geometry(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    col = Output((C, kh, kw, N, out_h, out_w), dtype)
    return _launch("im2col", dtype, C * kh * kw * N * out_h * out_w, (x, col, *geo))


def plan_col2im(col: Any, H: int, W: int, sy: int, sx: int, ph: int, pw: int,
                dy: int = 1, dx: int = 1) -> Launch:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W); one thread per pixel."""
    dtype = _float_dtype(col, "col")
    C, kh, kw, N, out_h, out_w = col.shape
    oh, ow, geo = _geometry(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    if (oh, ow) != (out_h, out_w):
        raise ValueError(f"col has out_h, out_w = {(out_h, out_w)} but image ({H}, {W}) "
                         f"with this window gives {(oh, ow)}")
    x = Output((N, C, H, W), dtype)
    return _launch("col2im", dtype, N * C * H * W, (col, x, *geo))


def plan_max_pool_forward(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                          dy: int = 1, dx: int = 1) -> Launch:
    """x: (N, C, H, W) -> y, argmax (int32): (N, C, out_h, out_w); one thread per output."""
    dtype = _float_dtype(x, "x")
    N, C, H, W = x.shape
    out_h, out_w, geo = _geometry(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    y = Output((N, C, out_h, out_w), dtype)
    argmax = Output((N, C, out_h, out_w), np.dtype(np.int32))
    return _launch("max_pool_forward", dtype, N * C * out_h * out_w, (x, y, argmax, *geo))


def plan_max_pool_backward(dy_out: Any, argmax: Any, H: int, W: int, kh: int, kw: int,
                           sy: int, sx: int, ph: int, pw: int,
                           dy: int = 1, dx: int = 1) -> Launch:
    """dy_out, argmax (int32): (N, C, out_h, out_w) -> dx: (N, C, H, W); one thread per pixel."""
    dtype = _float_dtype(dy_out, "dy_out")
    if np.dtype(argmax.dtype) != np.int32:
        raise TypeError(f"argmax must be int32, got {np.dtype(argmax.dtype)}")
    N, C = dy_out.shape[:2]
    out_h, out_w, geo = _geometry(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    _check_pooled(dy_out, "dy_out", N, C, out_h, out_w)
    _check_pooled(argmax, "argmax", N, C, out_h, out_w)
    gx = Output((N, C, H, W), dtype)
    return _launch("max_pool_backward", dtype, N * C * H * W, (dy_out, argmax, gx, *geo))


def plan_avg_pool_forward(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                          dy: int = 1, dx: int = 1) -> Launch:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); one thread per output."""
    dtype = _float_dtype(x, "x")
    N, C, H, W = x.shape
    out_h, out_w, geo = _geometry(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    y = Output((N, C, out_h, out_w), dtype)
    return _launch("avg_pool_forward", dtype, N * C * out_h * out_w, (x, y, *geo))


def plan_avg_pool_backward(dy_out: Any, H: int, W: int, kh: int, kw: int,
                           sy: int, sx: int, ph: int, pw: int,
                           dy: int = 1, dx: int = 1) -> Launch:
    """dy_out: (N, C, out_h, out_w) -> dx: (N, C, H, W); one thread per pixel."""
    dtype = _float_dtype(dy_out, "dy_out")
    N, C = dy_out.shape[:2]
    out_h, out_w, geo = _geometry(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    _check_pooled(dy_out, "dy_out", N, C, out_h, out_w)
    gx = Output((N, C, H, W), dtype)
    return _launch("avg_pool_backward", dtype, N * C * H * W, (dy_out, gx, *geo))


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
    ``call(launch, args)``. Returns the outputs as kernels_numpy does (one
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


def im2col(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
           dy: int = 1, dx: int = 1) -> Any:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w); see kernels_numpy.im2col."""
    return _run(plan_im2col(x, kh, kw, sy, sx, ph, pw, dy, dx))


def col2im(col: Any, H: int, W: int, sy: int, sx: int, ph: int, pw: int,
           dy: int = 1, dx: int = 1) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W); see kernels_numpy.col2im."""
    return _run(plan_col2im(col, H, W, sy, sx, ph, pw, dy, dx))


def max_pool_forward(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                     dy: int = 1, dx: int = 1) -> tuple[Any, Any]:
    """x: (N, C, H, W) -> (y, argmax int32), both (N, C, out_h, out_w);
    see kernels_numpy.max_pool_forward."""
    return _run(plan_max_pool_forward(x, kh, kw, sy, sx, ph, pw, dy, dx))


def max_pool_backward(dy_out: Any, argmax: Any, H: int, W: int, kh: int, kw: int,
                      sy: int, sx: int, ph: int, pw: int, dy: int = 1, dx: int = 1) -> Any:
    """dy_out, argmax: (N, C, out_h, out_w) -> dx: (N, C, H, W);
    see kernels_numpy.max_pool_backward."""
    return _run(plan_max_pool_backward(dy_out, argmax, H, W, kh, kw, sy, sx, ph, pw, dy, dx))


def avg_pool_forward(x: Any, kh: int, kw: int, sy: int, sx: int, ph: int, pw: int,
                     dy: int = 1, dx: int = 1) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); see kernels_numpy.avg_pool_forward."""
    return _run(plan_avg_pool_forward(x, kh, kw, sy, sx, ph, pw, dy, dx))


def avg_pool_backward(dy_out: Any, H: int, W: int, kh: int, kw: int,
                      sy: int, sx: int, ph: int, pw: int, dy: int = 1, dx: int = 1) -> Any:
    """dy_out: (N, C, out_h, out_w) -> dx: (N, C, H, W); see kernels_numpy.avg_pool_backward."""
    return _run(plan_avg_pool_backward(dy_out, H, W, kh, kw, sy, sx, ph, pw, dy, dx))
