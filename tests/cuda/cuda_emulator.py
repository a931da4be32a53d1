"""Build the CPU emulation of kernels/*.cu with g++ and launch it via ctypes.

``build(out_dir)`` compiles emulation_harness.cpp (which #includes every
kernels/*.cu through emulation.h) into a shared library; ``Emulator(lib)``
runs ``dualconv.kernels.cuda`` plans on it with the same grid, block and
arguments that CuPy would launch, through the same ``execute()``.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from dualconv.kernels import cuda
from dualconv.kernels import sources as cuda_sources

HERE = Path(__file__).resolve().parent
CXX = shutil.which("g++")
CXXFLAGS = ["-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-Wall", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g"]


def kernel_dir() -> Path:
    """The kernels/ directory whose sources are compiled (the source tree's)."""
    return Path(str(cuda_sources.kernel_dir()))


def build(out_dir: Path, sanitize: bool = False) -> Path:
    """Compile the harness and every kernels/*.cu into out_dir; returns the .so path."""
    if CXX is None:
        raise FileNotFoundError("g++ not found on PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [name for name in cuda_sources.kernel_sources() if name.endswith(".cu")]
    (out_dir / "kernel_sources.inc").write_text("".join(f'#include "{s}"\n' for s in sources))
    (out_dir / "kernel_registry.inc").write_text(
        "".join(f"DC_REGISTER({e})\n" for e in cuda.NAME_EXPRESSIONS))
    lib = out_dir / ("libdc_emulated_asan.so" if sanitize else "libdc_emulated.so")
    cmd = [CXX, *CXXFLAGS, *(SANITIZE if sanitize else []),
           f"-I{out_dir}", f"-I{HERE}", f"-I{kernel_dir()}",
           str(HERE / "emulation_harness.cpp"), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed ({' '.join(cmd)}):\n{proc.stderr}")
    return lib


_CTYPE_OF = {np.dtype(np.int64): ctypes.c_int64, np.dtype(np.int32): ctypes.c_int32,
             np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


class Emulator:
    """Runs kernel launches on the CPU through the harness library."""

    def __init__(self, lib_path: Path):
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.dc_name.restype = ctypes.c_char_p
        self.lib.dc_signature.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                          ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.lib.dc_launch.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint),
                                       ctypes.POINTER(ctypes.c_uint),
                                       ctypes.POINTER(ctypes.c_void_p)]
        self.launched: set[str] = set()

    def names(self) -> set[str]:
        """The kernel instantiations compiled into the library."""
        return {self.lib.dc_name(i).decode() for i in range(self.lib.dc_count())}

    def signature(self, name: str) -> list[tuple[bool, int]]:
        """[(is_pointer, size of the scalar or pointee)] per kernel parameter."""
        cap = 64
        is_ptr, size = (ctypes.c_int * cap)(), (ctypes.c_int * cap)()
        n = self.lib.dc_signature(name.encode(), is_ptr, size, cap)
        if n < 0:
            raise KeyError(f"kernel {name!r} is not in the emulation library")
        return [(bool(is_ptr[i]), size[i]) for i in range(n)]

    def _call(self, launch: cuda.Launch, args: tuple[Any, ...]) -> None:
        """Like cupy's RawKernel call, with the argument types checked against the
        kernel's C++ signature (a mismatch would be silent garbage on a GPU)."""
        sig = self.signature(launch.name)
        if len(sig) != len(args):
            raise TypeError(f"{launch.name} takes {len(sig)} arguments, plan passes {len(args)}")
        values = []
        for i, ((is_ptr, size), a) in enumerate(zip(sig, args)):
            if isinstance(a, np.ndarray):
                if not is_ptr or a.itemsize != size or not a.flags.c_contiguous:
                    raise TypeError(f"{launch.name} argument {i}: got {a.dtype} array, "
                                    f"kernel expects {'pointer to ' if is_ptr else ''}{size} bytes")
                values.append(ctypes.c_void_p(a.ctypes.data))
            else:
                a = np.asarray(a)
                if is_ptr or a.ndim != 0 or a.itemsize != size:
                    raise TypeError(f"{launch.name} argument {i}: got {a.dtype} scalar, "
                                    f"kernel expects {'pointer' if is_ptr else size} bytes")
                values.append(_CTYPE_OF[a.dtype](a.item()))
        params = (ctypes.c_void_p * max(1, len(values)))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        grid = (ctypes.c_uint * 3)(*launch.grid)
        block = (ctypes.c_uint * 3)(*launch.block)
        if self.lib.dc_launch(launch.name.encode(), grid, block, params) != 0:
            raise KeyError(f"kernel {launch.name!r} is not in the emulation library")
        self.launched.add(launch.name)

    def run(self, launch: cuda.Launch) -> Any:
        """Execute a plan; returns what the cpu.py function would."""
        return cuda.execute(launch, np, self._call)

    def call(self, kernel: str, *args: Any) -> Any:
        """``kernel`` run with the kernel signature, e.g. call("im2col", x, Window(3, 3, 1, 1, 0, 0))."""
        return self.run(cuda.PLANS[kernel](*args))
