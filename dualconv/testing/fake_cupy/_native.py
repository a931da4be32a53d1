"""CUDA C source run on the CPU: built by g++ into a shared library, launched through ctypes.

``load(code, names)`` compiles ``code`` (a RawModule's source) together with
emulation_harness.cpp, which runs a whole grid thread by thread, and returns a
``NativeModule``. Libraries are cached on disk under a hash of everything that
goes into them (``$DUALCONV_EMULATION_CACHE``, default
``~/.cache/dualconv/emulated_cupy``) and in memory per process, so a source
is compiled once per machine.

``set_sanitize(True)`` (``emulated_cupy(sanitize=True)``) makes later loads build
with AddressSanitizer and UndefinedBehaviorSanitizer: an out-of-bounds access or
undefined behaviour in a kernel aborts the process with a report. ASan must be the
first library of the process, so it needs a Python started with the runtime
preloaded: ``LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0``
(``sanitizer_env()`` gives that environment, or None where g++ has no ASan;
``python -m dualconv.testing.sanitized COMMAND`` runs a command in it, with
``$DUALCONV_EMULATE_SANITIZE=1``, which turns ``emulated_cupy``'s sanitize on).

Blocks and threads run in one of ``ORDERS``: a launch's ``order`` argument, else
``$DUALCONV_EMULATE_ORDER`` (read at every launch), else "forward". A GPU keeps
no order, so a kernel must give the same result in all three (the harness says why).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...kernels.built_files import built, digest

HERE = Path(__file__).resolve().parent
CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off",
            "-Wall", "-Werror")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g")
KINDS = {0: "i", 1: "u", 2: "f", 3: "b", 4: "?"}
"""The harness's type codes, as NumPy dtype kinds."""
ORDERS = ("forward", "reverse", "shuffle")
"""The orders blocks and threads can run in (the harness's codes are the indices)."""
ORDER_ENV = "DUALCONV_EMULATE_ORDER"
SANITIZE_ENV = "DUALCONV_EMULATE_SANITIZE"

_loaded: dict[str, "NativeModule"] = {}
_lock = threading.Lock()
_sanitize = [False]  # set_sanitize's state: whether load() builds with SANITIZE


def compiler() -> str:
    """Path of g++; raises a plain RuntimeError when there is none."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if cxx is None:
        raise RuntimeError("the emulated CuPy needs g++ to run CUDA kernels on the CPU, and no g++ "
                           "was found on PATH (install it, e.g. apt-get install g++)")
    return cxx


def launch_order(order: str | None = None) -> str:
    """``order``, else $DUALCONV_EMULATE_ORDER, else "forward"; ValueError for any other name."""
    chosen = order if order is not None else (os.environ.get(ORDER_ENV, "").strip() or "forward")
    if chosen not in ORDERS:
        where = "order" if order is not None else ORDER_ENV
        raise ValueError(f"the emulated CuPy's {where} must be one of {ORDERS}, got {chosen!r}")
    return chosen


def _gxx_file(name: str) -> str | None:
    """The path g++ links ``name`` from, or None where it has none."""
    try:
        path = subprocess.run([compiler(), f"-print-file-name={name}"], capture_output=True,
                              text=True).stdout.strip()
    except (RuntimeError, OSError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


def asan_runtime() -> str | None:
    """Path of g++'s AddressSanitizer runtime (libasan.so), or None where it has none
    (or no UBSan runtime, libubsan.so, which SANITIZE needs as well)."""
    found = [_gxx_file(name) for name in ("libasan.so", "libubsan.so")]
    return found[0] if all(found) else None


def sanitizer_env(base: dict[str, str] | None = None) -> dict[str, str] | None:
    """``base`` (default os.environ) plus what a child Python needs to load sanitized
    builds: the ASan runtime preloaded, leak checks off (CPython does not free everything
    at exit), and NVRTC's folder on the library path (ASan's dlopen loses libnvrtc's
    $ORIGIN, where it finds libnvrtc-builtins). None where g++ has no ASan runtime."""
    runtime = asan_runtime()
    if runtime is None:
        return None
    env = dict(os.environ if base is None else base)
    # libstdc++ right after ASan: its __cxa_throw interceptor binds to the real one at
    # start-up, and a C++ extension that throws (matplotlib's ft2font does on import)
    # aborts the process when libstdc++ arrives later by dlopen.
    libstdcxx = _gxx_file("libstdc++.so.6")
    env["LD_PRELOAD"] = " ".join(filter(None, [runtime, libstdcxx, env.get("LD_PRELOAD", "")]))
    env["ASAN_OPTIONS"] = ":".join(filter(None, ["detect_leaks=0", env.get("ASAN_OPTIONS", "")]))
    try:
        import nvidia.cuda_nvrtc as nvrtc
        folders = [str(Path(root, "lib")) for root in nvrtc.__path__]
    except ImportError:
        folders = []
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*folders, env.get("LD_LIBRARY_PATH", "")]))
    return env


def sanitize_requested() -> bool:
    """Whether $DUALCONV_EMULATE_SANITIZE asks for sanitized builds (set, and not "0")."""
    return os.environ.get(SANITIZE_ENV, "").strip() not in ("", "0")


def asan_loaded() -> bool:
    """True when the ASan runtime is in this process (it must be preloaded to work)."""
    return hasattr(ctypes.CDLL(None), "__asan_init")


def set_sanitize(on: bool) -> bool:
    """Make later ``load`` calls build with the sanitizers (on) or without; returns the
    previous setting. Turning them on raises RuntimeError unless the ASan runtime is
    preloaded (see the module docstring), or when libraries built without them are
    already loaded in this process (kernels compiled earlier would keep running
    unchecked: start the process sanitized instead)."""
    previous = _sanitize[0]
    if on and not previous:
        if not asan_loaded():
            raise RuntimeError("the emulated CuPy's sanitize=True needs the AddressSanitizer runtime "
                               "loaded first in the process: run Python with LD_PRELOAD=$(g++ "
                               "-print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 (see "
                               "dualconv.testing.fake_cupy._native.sanitizer_env)")
        unchecked = [key for key, module in _loaded.items() if not module.sanitized]
        if unchecked:
            raise RuntimeError(f"the emulated CuPy's sanitize=True: {len(unchecked)} kernel "
                               f"libraries were already loaded without sanitizers in this process "
                               f"and would keep running unchecked; turn sanitize on before any "
                               f"kernel runs")
    _sanitize[0] = bool(on)
    return previous


def cache_dir() -> Path:
    root = os.environ.get("DUALCONV_EMULATION_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "dualconv" / "emulated_cupy"


def build(code: str, names: Sequence[str], out_dir: Path, sanitize: bool = False) -> Path:
    """Compile ``code`` and the harness into out_dir; returns the .so path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "module.cu").write_text(code)
    (out_dir / "kernel_registry.inc").write_text("".join(f"DC_REGISTER({n})\n" for n in names))
    lib = out_dir / ("libdc_emulated_asan.so" if sanitize else "libdc_emulated.so")
    cmd = [compiler(), *CXXFLAGS, *(SANITIZE if sanitize else ()), f"-I{out_dir}", f"-I{HERE}",
           str(HERE / "emulation_harness.cpp"), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ could not build the CPU emulation of the module "
                           f"({' '.join(cmd)}):\n{proc.stderr}")
    return lib


def _key(code: str, names: Sequence[str], sanitize: bool) -> str:
    return digest(code, "\n".join(names), " ".join(CXXFLAGS + (SANITIZE if sanitize else ())),
                  (HERE / "emulation_harness.cpp").read_text(), (HERE / "emulation.h").read_text())


def load(code: str, names: Sequence[str]) -> "NativeModule":
    """The module built from ``code`` with kernels ``names`` (with the sanitizers while
    set_sanitize is on): from memory, the disk cache, or g++."""
    sanitize = _sanitize[0]
    key = _key(code, names, sanitize)
    with _lock:
        module = _loaded.get(key)
        if module is None:
            lib = built(cache_dir() / key / "libdc_emulated.so",
                        lambda scratch: build(code, names, scratch, sanitize))
            module = _loaded[key] = NativeModule(lib, sanitize)
    return module


class NativeModule:
    """The kernels of one built library: names, C++ signatures, and launches."""

    def __init__(self, lib_path: Path, sanitized: bool = False):
        self.sanitized = sanitized  # built with SANITIZE
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.dc_name.restype = ctypes.c_char_p
        ints = ctypes.POINTER(ctypes.c_int)
        self.lib.dc_signature.argtypes = [ctypes.c_char_p, ints, ints, ints, ctypes.c_int]
        self.lib.dc_launch.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint),
                                       ctypes.POINTER(ctypes.c_uint),
                                       ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        self.flushes_subnormals = bool(self.lib.dc_flushes_subnormals())
        self._signatures: dict[str, list[tuple[bool, int, str]]] = {}

    def names(self) -> set[str]:
        """The kernel names compiled into the library."""
        return {self.lib.dc_name(i).decode() for i in range(self.lib.dc_count())}

    def signature(self, name: str) -> list[tuple[bool, int, str]]:
        """[(is_pointer, size, dtype kind) of the scalar or pointee] per kernel parameter."""
        sig = self._signatures.get(name)
        if sig is None:
            cap = 64
            is_ptr, size, kind = (ctypes.c_int * cap)(), (ctypes.c_int * cap)(), (ctypes.c_int * cap)()
            n = self.lib.dc_signature(name.encode(), is_ptr, size, kind, cap)
            if n < 0:
                raise KeyError(f"kernel {name!r} is not in the emulation library")
            sig = self._signatures[name] = [(bool(is_ptr[i]), size[i], KINDS[kind[i]]) for i in range(n)]
        return sig

    def launch(self, name: str, grid: Sequence[int], block: Sequence[int], args: Sequence[Any],
               order: str | None = None) -> None:
        """Run ``name<<<grid, block>>>(*args)``; args are host arrays (for pointer
        parameters) and NumPy scalars, checked against the C++ signature. Blocks and
        threads run in ``launch_order(order)``."""
        code = ORDERS.index(launch_order(order))
        sig = self.signature(name)
        if len(sig) != len(args):
            raise TypeError(f"kernel {name} takes {len(sig)} arguments, got {len(args)}")
        values = [_value(name, i, s, a) for i, (s, a) in enumerate(zip(sig, args))]
        params = (ctypes.c_void_p * max(1, len(values)))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        grid3, block3 = _dim3(grid, "grid"), _dim3(block, "block")
        self.lib.dc_launch(name.encode(), (ctypes.c_uint * 3)(*grid3), (ctypes.c_uint * 3)(*block3),
                           params, code)


_CTYPES = {("i", 1): ctypes.c_int8, ("i", 2): ctypes.c_int16, ("i", 4): ctypes.c_int32,
           ("i", 8): ctypes.c_int64, ("u", 1): ctypes.c_uint8, ("u", 2): ctypes.c_uint16,
           ("u", 4): ctypes.c_uint32, ("u", 8): ctypes.c_uint64, ("f", 4): ctypes.c_float,
           ("f", 8): ctypes.c_double, ("b", 1): ctypes.c_bool}


class ByValue:
    """A one-element numpy array passed by value: its bytes are the parameter (CuPy's
    CNumpyArray), such as a struct of the kernel's (np.void)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _describe(is_ptr: bool, size: int, kind: str) -> str:
    base = {"i": "int", "u": "uint", "f": "float", "b": "bool"}.get(kind)
    if base is None:
        return f"{'pointer to ' if is_ptr else ''}a {size}-byte struct"
    return f"{'pointer to ' if is_ptr else ''}{base}{size * 8}"


def _value(name: str, i: int, sig: tuple[bool, int, str], a: Any) -> Any:
    is_ptr, size, kind = sig
    expects = _describe(is_ptr, size, kind)
    if isinstance(a, ByValue):
        value = a.array
        if is_ptr or value.dtype.itemsize != size or (kind != "?" and value.dtype.kind != kind):
            raise TypeError(f"kernel {name} argument {i}: got a one-element {value.dtype} array "
                            f"({value.dtype.itemsize} bytes) by value, expects {expects}")
        return (ctypes.c_char * size).from_buffer(value)
    if isinstance(a, np.ndarray):
        if not is_ptr or a.dtype.itemsize != size or (kind != "?" and a.dtype.kind != kind):
            raise TypeError(f"kernel {name} argument {i}: got a {a.dtype} array, expects {expects}")
        if not a.flags.c_contiguous:
            raise TypeError(f"kernel {name} argument {i}: the array is not C-contiguous (kernels "
                            f"ignore strides); pass ascontiguousarray(...)")
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.generic):
        dtype = a.dtype
    elif isinstance(a, bool):
        dtype = np.dtype(np.bool_)
    elif isinstance(a, int):
        dtype = np.dtype(np.int64)  # CuPy passes a Python int as long long
    elif isinstance(a, float):
        dtype = np.dtype(np.float64)  # ... and a Python float as double
    else:
        raise TypeError(f"kernel {name} argument {i}: unsupported type {type(a).__name__}")
    if is_ptr or dtype.itemsize != size or dtype.kind != kind:
        raise TypeError(f"kernel {name} argument {i}: got a {dtype} scalar, expects {expects}")
    return _CTYPES[(kind, size)](a.item() if isinstance(a, np.generic) else a)


def _dim3(dims: Any, what: str) -> tuple[int, int, int]:
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    if not 1 <= len(dims) <= 3 or any(int(d) < 1 for d in dims):
        raise ValueError(f"{what} must be 1 to 3 positive ints, got {dims}")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
