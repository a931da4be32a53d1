"""Which array module computes: "numpy" (CPU) or "cupy" (GPU).

Everything outside the kernels is written once against an array module
``xp``. The current backend comes from, in order: the innermost
``use_backend(...)`` block, the last ``set_backend(...)``, the environment
variable ``DUALCONV_BACKEND``, and finally "numpy".
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import platform
from types import ModuleType
from typing import Any, Iterator

import numpy as np

BACKENDS = ("numpy", "cupy", "auto")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("dualconv_backend", default=None)
_global: str | None = None


def _import_cupy() -> ModuleType | None:
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install raising on import
        return None
    return cupy


def cupy_problem() -> str | None:
    """Why the CuPy backend cannot run here, or None when it can."""
    cupy = _import_cupy()
    if cupy is None:
        return "CuPy is not installed (pip install 'dualconv[gpu]')"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy is installed but no GPU is usable: {exc}"
    if count < 1:
        return "CuPy is installed but no GPU is usable: no CUDA device found"
    return None


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device. Never raises."""
    try:
        return cupy_problem() is None
    except Exception:
        return False


def _resolve(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "cupy" if gpu_available() else "numpy"
    if name == "cupy":
        problem = cupy_problem()
        if problem is not None:
            raise RuntimeError(f"backend 'cupy' requested but {problem}")
    return name


def set_backend(name: str) -> str:
    """Make ``name`` ("numpy", "cupy" or "auto") the default backend; returns the one chosen."""
    global _global
    _global = _resolve(name)
    return _global


def get_backend() -> str:
    """The name of the backend new arrays and models go to."""
    name = _current.get() or _global
    if name is None:
        name = _resolve(os.environ.get("DUALCONV_BACKEND", "numpy").strip().lower() or "numpy")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Within the block, ``name`` is the backend: ``with use_backend("cupy"): ...``."""
    token = _current.set(_resolve(name))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def xp_for(name: str | None = None) -> ModuleType:
    """The array module of a backend (the current one by default)."""
    name = _resolve(name) if name is not None else get_backend()
    if name == "cupy":
        return _import_cupy()
    return np


def get_array_module(*arrays: Any) -> ModuleType:
    """numpy or cupy, whichever the arrays live in (numpy for plain Python values)."""
    cupy = _import_cupy() if any(type(a).__module__.startswith("cupy") for a in arrays) else None
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return np


def backend_of(array: Any) -> str:
    """"cupy" for a cupy array, else "numpy"."""
    return "cupy" if type(array).__module__.startswith("cupy") else "numpy"


def to_backend(array: Any, name: str) -> Any:
    """The array on the named backend ("numpy" or "cupy"), copied only if it must move."""
    if name == "numpy":
        return asnumpy(array)
    if name == "cupy":
        return xp_for("cupy").asarray(array)
    raise ValueError(f"backend must be 'numpy' or 'cupy', got {name!r}")


def asnumpy(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (or a scalar)."""
    if backend_of(array) == "cupy":
        return array.get()
    return np.asarray(array)


def device_name(backend: str) -> str:
    """The GPU's name for "cupy", else the CPU's model name (from /proc/cpuinfo where there is one)."""
    if backend == "cupy":
        cupy = _import_cupy()
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def versions() -> dict[str, str | None]:
    """Versions of Python, NumPy, CuPy (None when it does not import) and dualconv."""
    from . import __version__

    cupy = _import_cupy()
    return {"python": platform.python_version(), "numpy": np.__version__,
            "cupy": None if cupy is None else cupy.__version__, "dualconv": __version__}
