"""cupy.RawModule and cupy.RawKernel: CUDA C compiled by NVRTC (when installed), run by g++.

``RawModule(code=..., options=..., name_expressions=...)`` compiles ``code``
twice: with NVRTC exactly as CuPy would (the options, then ``-ftz=true`` and
the device's architecture), so what does not compile for a GPU fails here
too; and with g++ through the emulation harness, which is what runs. NVRTC
comes from the pip package nvidia-cuda-nvrtc-cu12; without it only the g++
build happens.
"""
from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import _device, _native
from ._array import ndarray

ARCH = "sm_90"
"""The architecture the emulated device reports (an H100's)."""

_EXTERN_C = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')
_nvrtc_checked: dict[tuple[str, tuple[str, ...], tuple[str, ...]], None] = {}
_nvrtc_lock = threading.Lock()


class CompileException(Exception):
    """NVRTC rejected the source (as cupy.cuda.compiler.CompileException)."""


class RawKernel:
    """One kernel of a RawModule: ``kernel(grid, block, args)`` runs the whole grid."""

    def __init__(self, code: str, name: str, options: Sequence[str] = (), backend: str = "nvrtc",
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 jitify: bool = False) -> None:
        self._module, self.name = RawModule(code=code, options=options), name

    @classmethod
    def _of(cls, module: "RawModule", name: str) -> "RawKernel":
        kernel = cls.__new__(cls)
        kernel._module, kernel.name = module, name
        return kernel

    @property
    def code(self) -> str:
        return self._module.code

    @property
    def options(self) -> tuple[str, ...]:
        return self._module.options

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], *, shared_mem: int = 0,
                 enable_cooperative_groups: bool = False) -> None:
        if shared_mem:
            raise NotImplementedError("the emulated CuPy runs kernels without shared memory")
        host_args = []
        for i, a in enumerate(args):
            if isinstance(a, ndarray):
                host_args.append(a._a)
            elif isinstance(a, np.ndarray) and a.size == 1:
                host_args.append(_native.ByValue(a.copy()))  # CuPy copies it into the launch's parameters
            elif isinstance(a, (np.ndarray, list, tuple)):
                raise TypeError(f"kernel {self.name} argument {i}: got {type(a)}; kernel arguments "
                                f"must be cupy arrays, scalars or one-element numpy arrays (passed "
                                f"by value); copy host data with cupy.asarray")
            else:
                host_args.append(a)
        _device.launch(self._module._library().launch, self.name, grid, block, host_args)


class RawModule:
    """A CUDA C source whose kernels run on the CPU (see the module docstring)."""

    def __init__(self, code: str | None = None, path: str | None = None, options: Sequence[str] = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, name_expressions: Sequence[str] | None = None,
                 jitify: bool = False) -> None:
        if (code is None) == (path is None):
            raise TypeError("RawModule: give exactly one of code= or path=")
        self.code = code if code is not None else Path(path).read_text()
        self.options = tuple(options)
        self.backend = backend
        self.name_expressions = tuple(name_expressions or ())
        self._lib: Any = None
        self._functions: dict[str, RawKernel] = {}

    def _names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.name_expressions, *_EXTERN_C.findall(self.code)]))

    def compile(self, log_stream: Any = None) -> None:
        """Compile now (NVRTC check, then the g++ build) instead of at the first get_function."""
        self._library()

    def _library(self) -> _native.NativeModule:
        if self._lib is None:
            nvrtc_check(self.code, self.options, self.name_expressions)
            self._lib = _native.load(self.code, self._names())
        return self._lib

    def get_function(self, name: str) -> RawKernel:
        """The kernel ``name`` (an extern "C" name, or one of the name_expressions)."""
        lib = self._library()
        if name not in lib.names():
            raise KeyError(f"RawModule has no kernel {name!r} (name expressions: "
                           f"{list(self.name_expressions)})")
        return RawKernel._of(self, name)


# -- NVRTC -------------------------------------------------------------------------

def _load_nvrtc() -> ctypes.CDLL | None:
    try:
        import nvidia.cuda_nvrtc
    except ImportError:
        return None
    for root in nvidia.cuda_nvrtc.__path__:
        for lib in sorted(Path(root, "lib").glob("libnvrtc.so.*")):
            try:
                return ctypes.CDLL(str(lib))
            except OSError:
                continue
    return None


NVRTC = _load_nvrtc()


def cupy_options(options: Sequence[str]) -> tuple[str, ...]:
    """The NVRTC options CuPy 14 compiles a RawModule with: the user's, -ftz=true, the arch."""
    return (*options, "-ftz=true", f"-arch={ARCH}")


def nvrtc_check(code: str, options: Sequence[str], name_expressions: Sequence[str]) -> None:
    """Compile with NVRTC as CuPy does (once per source); raise CompileException on errors."""
    if NVRTC is None:
        return
    key = (code, tuple(options), tuple(name_expressions))
    with _nvrtc_lock:
        if key in _nvrtc_checked:
            return
        prog = ctypes.c_void_p()
        if NVRTC.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), b"kern.cu", 0, None, None):
            raise CompileException("nvrtcCreateProgram failed")
        try:
            for name in name_expressions:
                NVRTC.nvrtcAddNameExpression(prog, name.encode())
            opts = cupy_options(options)
            argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
            rc = NVRTC.nvrtcCompileProgram(prog, len(opts), argv)
            if rc != 0:
                size = ctypes.c_size_t()
                NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
                log = ctypes.create_string_buffer(size.value)
                NVRTC.nvrtcGetProgramLog(prog, log)
                raise CompileException(log.value.decode(errors="replace"))
        finally:
            NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
        _nvrtc_checked[key] = None
