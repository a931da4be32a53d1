"""CPU kernels compiled from C: kernels/cpu_*.c, built by the system C compiler into one
shared library and called through ctypes.

``library()`` returns the loaded library, or None when there is none to be had: turned
off (``DUALCONV_NATIVE=0``), no C compiler (``$CC``, else ``cc``), or a build or load
that failed (a RuntimeWarning says why, once; a cached library that does not load is
built again first, and a compiler that refuses ``-march=native`` gets a build without
it). Where it is None the NumPy twins run instead.
Each C kernel keeps its NumPy twin's contract: the max-pool kernels only compare, select
and add zero, so they give the same bits; the convolution's sums are a BLAS product's
dot products in one order BLAS may use, so they agree within its rounding bound.

The library is built once per machine for the CPU it runs on (``-O3 -march=native``;
``-ffp-contract=fast``, so a multiply-add is one fused instruction where the CPU has it,
as in BLAS's kernels; no ``-ffast-math``, which would drop the NaN tests and reorder
sums) and cached under
``$DUALCONV_CACHE`` (default ``~/.cache/dualconv``), in ``cpu_kernels/``, named by a
hash of the sources, the compiler's version, the flags and the CPU's model and flags.
A build goes to a temporary folder and is renamed into place (built_files.py), so processes
building at once (the engine's worker, parallel test runs) never load a half-written file.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .built_files import built, digest
from .sources import kernel_dir

SWITCH = "DUALCONV_NATIVE"
"""Set to 0 to turn the compiled kernels off (the NumPy twins run). Read at each call, in the
process that computes: set it before the CPU engine's worker starts, which keeps the
environment it was forked with (dualconv.release_workers() ends a worker)."""
FLAGS = ("-O3", "-march=native", "-std=c99", "-fPIC", "-shared", "-ffp-contract=fast")
CLANG_CONTRACT = "-ffp-contract=on"
"""For clang, in place of FLAGS' -ffp-contract=fast: it fuses each expression's multiply-add
as fast does, and, unlike fast, honours ``#pragma clang fp contract(off)`` (the SGD update
must round as written). GCC 12 treats "on" as "off", so it keeps "fast" and its own pragma."""
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
"""The dtypes the C kernels take, and the suffix of each kernel's name for it."""
_SIZE = ctypes.c_ssize_t
_POINTER = ctypes.c_void_p
SIGNATURES: dict[str, tuple[Any, ...]] = {
    **{f"max_pool_tiled_{direction}_{suffix}": (_POINTER,) * 3 + (_SIZE,) * 6  # C, H, W, N, kh, kw
       for direction in ("forward", "backward") for suffix in ("f32", "f64")},
    # x, w, b, y; C, Hp, Wp, N, O, kh, kw, sy, sx, dy, dx
    **{f"conv_forward_{suffix}": (_POINTER,) * 4 + (_SIZE,) * 11 for suffix in ("f32", "f64")},
    # three arrays; C, Hp, Wp, N, O, kh, kw, sy, sx, dy, dx
    **{f"conv_{gradient}_gradient_{suffix}": (_POINTER,) * 3 + (_SIZE,) * 11
       for gradient in ("input", "weight") for suffix in ("f32", "f64")},
    **{f"conv_weight_gradient_{suffix}_half": (_POINTER,) * 3 + (_SIZE,) * 11 for suffix in ("f32", "f64")},
    # w, g, v, w_last, v_last; n; lr, momentum, weight_decay; decay, moving, nesterov
    **{f"sgd_update_guarded_{suffix}": (_POINTER,) * 5 + (_SIZE, number, number, number) + (ctypes.c_int,) * 3
       for suffix, number in (("f32", ctypes.c_float), ("f64", ctypes.c_double))},
    "conv_blocks": (_POINTER,),
}
"""Every exported function's argument types, as kernels/cpu_*.c declare them."""

_lock = threading.Lock()
_loaded: dict[str, Any] = {}  # "library": the CDLL or None, once decided in this process


def _new_lock_in_child() -> None:
    """A child forked while a build held the lock gets a free one: the build is the
    parent's, and the child decides for itself on first use."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def enabled() -> bool:
    """Whether ``DUALCONV_NATIVE`` allows the compiled kernels (unset, or anything but 0)."""
    return os.environ.get(SWITCH, "").strip() != "0"


def library() -> Any:
    """The compiled kernels as a ctypes.CDLL, built or loaded on first use; None when
    they are off or cannot be built (the NumPy twins then run)."""
    if not enabled():
        return None
    if "library" not in _loaded:
        with _lock:
            if "library" not in _loaded:  # decided once, and only here: another thread waits on the lock
                _loaded["library"], problem = _build_and_load()
                if problem is not None:  # decided before warning: a warning raised as an error still falls back
                    warnings.warn(f"dualconv: the compiled CPU kernels could not be built ({problem}); "
                                  f"the NumPy kernels run instead", RuntimeWarning, stacklevel=2)
    return _loaded["library"]


def _sources() -> dict[str, str]:
    """{file name: text} of every kernels/cpu_*.c, sorted by name."""
    root = kernel_dir()
    return {e.name: e.read_text() for e in sorted(root.iterdir(), key=lambda e: e.name)
            if e.name.startswith("cpu_") and e.name.endswith(".c")}


def _cpu_signature() -> str:
    """The CPU's model and flags (what -march=native builds for), from /proc/cpuinfo
    where there is one."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        import platform
        return platform.machine() + platform.processor()


def cache_dir() -> Path:
    """Where built libraries are kept: $DUALCONV_CACHE/cpu_kernels, else ~/.cache/dualconv/cpu_kernels."""
    root = os.environ.get("DUALCONV_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "dualconv") / "cpu_kernels"


def _compiler() -> list[str] | None:
    """$CC (a command with its own options, such as "ccache gcc"), else cc, as argv; None
    where it names no program on PATH."""
    command = shlex.split(os.environ.get("CC", "cc")) or ["cc"]
    found = shutil.which(command[0])
    return None if found is None else [found, *command[1:]]


def _build_and_load() -> tuple[Any, str | None]:
    """(the library, built first where the cache lacks it, or None; why it could not be
    built or loaded, None where it was or where there is no compiler, which is no fault).
    A compiler that refuses FLAGS' ``-march=native`` (not every compiler takes it for every
    target) gets a second build without it, for the target's baseline, whose max-pool and
    SGD are still compiled; any other failure is reported as it is."""
    compiler = _compiler()
    if compiler is None:
        return None, None
    try:
        sources = _sources()
        version = subprocess.run([*compiler, "--version"], capture_output=True, text=True,
                                 errors="replace", timeout=60).stdout
        flags = _flags(version)
        try:
            return _load(compiler, version, flags, sources), None
        except RuntimeError as refused:
            if "march" not in str(refused):  # the sources' or the compiler's fault: reported
                raise
            baseline = tuple(flag for flag in flags if not flag.startswith("-march="))
            try:
                return _load(compiler, version, baseline, sources), None
            except Exception as error:
                raise RuntimeError(f"{refused}; then without -march: "
                                   f"{type(error).__name__}: {error}") from error
    except Exception as error:  # any failure costs speed, never the user's run
        return None, f"{type(error).__name__}: {error}"


def _load(compiler: list[str], version: str, flags: tuple[str, ...], sources: dict[str, str]) -> Any:
    """The library built from ``sources`` with ``flags``, from the cache or built first
    (RuntimeError where the compiler fails), its functions' argument types declared."""
    key = digest(repr((sorted(sources.items()), compiler, version, flags, _cpu_signature())))
    target = cache_dir() / f"cpu_kernels_{key}.so"

    def build(scratch: Path) -> Path:
        return _compile(compiler, flags, sources, scratch, target.name)
    try:
        lib = ctypes.CDLL(str(built(target, build)))
    except OSError:  # a cached file that does not load (another libc, a cut one): built again
        lib = ctypes.CDLL(str(built(target, build, again=True)))
    for name, argtypes in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int if name.startswith(("sgd_", "conv_blocks")) else None
    return lib


def _flags(version: str) -> tuple[str, ...]:
    """FLAGS for the compiler whose --version printed ``version`` (clang: CLANG_CONTRACT)."""
    if "clang" in version.lower():
        return tuple(CLANG_CONTRACT if flag.startswith("-ffp-contract") else flag for flag in FLAGS)
    return FLAGS


def _compile(compiler: list[str], flags: tuple[str, ...], sources: dict[str, str], scratch: Path,
             name: str) -> Path:
    """Compile ``sources`` as one translation unit into scratch/name; its path."""
    source = Path(scratch, "cpu_kernels.c")
    source.write_text("".join(f'#line 1 "{file}"\n{text}\n' for file, text in sources.items()))
    library = Path(scratch, name)
    done = subprocess.run([*compiler, *flags, str(source), "-o", str(library)],
                          capture_output=True, text=True, errors="replace", timeout=300)
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if "error" in line),
                     done.stderr.strip()[:200] or "no message")
        raise RuntimeError(f"{Path(compiler[0]).name} exited with {done.returncode}: {first}")
    return library
