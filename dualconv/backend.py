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
import sys
from types import ModuleType
from typing import Any, Iterator

import numpy as np

from .version import __version__

BACKENDS = ("numpy", "cupy", "auto")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("dualconv_backend", default=None)
_global: str | None = None


def _import_cupy() -> ModuleType | None:
    cupy = sys.modules.get("cupy")  # imported already (or the stand-in): no import machinery
    if cupy is not None:
        return cupy
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install raising on import
        return None
    return cupy


PROBE = r'''
extern "C" __global__ void dualconv_probe(float* x) { x[threadIdx.x] = 2.0f * threadIdx.x; }
'''
"""The kernel gpu_available() compiles and runs: "auto" must not pick a GPU that then fails."""

_checked: dict[int, tuple[Any, str | None]] = {}


def _check_cupy(cupy: ModuleType) -> str | None:
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy is installed but no GPU is usable: {exc}"
    if count < 1:
        return "CuPy is installed but no GPU is usable: no CUDA device found"
    try:
        x = cupy.zeros(4, dtype=cupy.float32)
        cupy.RawModule(code=PROBE).get_function("dualconv_probe")((1,), (4,), (x,))
        if x.get().tolist() != [0.0, 2.0, 4.0, 6.0]:
            return "CuPy sees a GPU but a test kernel computed wrong values"
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("" if getattr(cupy, "_dualconv_emulated", False)
                else "; pip install 'cupy-cuda12x[ctk]' brings the CUDA headers and NVRTC")
        return f"CuPy sees a GPU but cannot compile or run a kernel on it ({first}){hint}"
    return None


def cupy_problem() -> str | None:
    """Why the CuPy backend cannot run here, or None when it can.

    Checks once per process (per CuPy module) that a device exists and that a
    small kernel compiles, runs and returns the right values.
    """
    cupy = _import_cupy()
    if cupy is None:
        return "CuPy is not installed (pip install 'dualconv[gpu]')"
    cached = _checked.get(id(cupy))
    if cached is None or cached[0] is not cupy:
        cached = _checked[id(cupy)] = (cupy, _check_cupy(cupy))
    return cached[1]


NVIDIA_DEVICES = "/proc/driver/nvidia/gpus"
"""Where the NVIDIA driver lists the machine's GPUs, one folder each (Linux)."""


def cuda_device_present() -> bool:
    """True when the machine has a CUDA device, whether or not CuPy can use it. Never raises.

    Asks the real CuPy for its device count where it imports, else the NVIDIA driver's
    list (NVIDIA_DEVICES): a GPU without a working CuPy counts too, so that what must run
    on it can tell "cannot use this GPU" (cupy_problem) from "there is none".
    """
    cupy = _import_cupy()
    if cupy is not None and not getattr(cupy, "_dualconv_emulated", False):
        try:
            if cupy.cuda.runtime.getDeviceCount() > 0:
                return True
        except Exception:  # no driver, or a broken one: the driver's list decides
            pass
    try:
        return any(os.scandir(NVIDIA_DEVICES))
    except OSError:
        return False


def gpu_available() -> bool:
    """True when CuPy imports, sees a CUDA device and compiles a kernel for it. Never raises."""
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
            raise RuntimeError(f"backend 'cupy' requested: {problem}")
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


_ARRAY_MODULES: dict[type, ModuleType] = {}
"""Each argument type's array module, as get_array_module last found it. CuPy's answer
depends on the type alone (an instance of its ndarray or not), so it is asked once per type."""


def get_array_module(*arrays: Any) -> ModuleType:
    """numpy or cupy, whichever the arrays live in (numpy for plain Python values)."""
    for array in arrays:
        module = _ARRAY_MODULES.get(type(array))
        if module is None:
            module = _array_module_of(array)
        if module is not np:
            return module
    return np


def _array_module_of(array: Any) -> ModuleType:
    """CuPy's ``get_array_module(array)`` for a type from CuPy, else numpy; remembered per
    type once known (not while CuPy fails to import)."""
    if not type(array).__module__.startswith("cupy"):
        module: ModuleType = np
    else:
        cupy = _import_cupy()
        if cupy is None:
            return np
        module = cupy.get_array_module(array)
    _ARRAY_MODULES[type(array)] = module
    return module


def backend_of(array: Any) -> str:
    """"cupy" for a cupy array, else "numpy"."""
    return "cupy" if type(array).__module__.startswith("cupy") else "numpy"


def to_backend(array: Any, name: str) -> Any:
    """The array on the named backend ("numpy" or "cupy"), copied only if it must move."""
    if name == "numpy":
        return asnumpy(array)
    if name == "cupy":
        module = _ARRAY_MODULES.get(type(array))  # get_array_module's lookup written out
        if module is None:
            module = get_array_module(array)
        if module is sys.modules.get("cupy"):  # there already: the step's case, made cheap
            return array
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
    cupy = _import_cupy()
    return {"python": platform.python_version(), "numpy": np.__version__,
            "cupy": None if cupy is None else cupy.__version__, "dualconv": __version__}


def emulated() -> bool:
    """True when "cupy" is the CPU stand-in (dualconv.testing.emulated_cupy)."""
    return bool(getattr(_import_cupy(), "_dualconv_emulated", False))


def describe() -> str:
    """Versions, the device and the kernel compile check, for ``dualconv info``."""
    lines = [f"dualconv {__version__}, python {platform.python_version()}, numpy {np.__version__}"]
    cupy = _import_cupy()
    if cupy is None:
        lines.append("cupy: not installed (pip install 'dualconv[gpu]')")
    else:
        how = " (emulated on the CPU by dualconv.testing, DUALCONV_EMULATE_GPU)" if emulated() else ""
        lines.append(f"cupy {cupy.__version__}{how}")
    problem = cupy_problem()
    if problem is None:
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(rt.getDevice())
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        lines.append(f"CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}")
        lines.append(f"device {rt.getDevice()}: {name}, compute capability {props['major']}.{props['minor']}, "
                     f"{props['totalGlobalMem'] / 2**30:.1f} GiB")
        lines.append("kernel compile check: ok")
    else:
        lines.append(f"kernel compile check: {problem}")
    lines.append(f"--backend auto picks: {'cupy' if problem is None else 'numpy'}")
    return "\n".join(lines)


def _emulate_from_environment() -> None:
    """DUALCONV_EMULATE_GPU=1: the CuPy stand-in for the whole process."""
    if os.environ.get("DUALCONV_EMULATE_GPU", "").strip() not in ("", "0"):
        from .testing.emulation import install
        install()


_emulate_from_environment()
