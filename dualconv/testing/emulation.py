"""Switch the CPU stand-in for CuPy on: ``emulated_cupy()`` or ``DUALCONV_EMULATE_GPU=1``.

    from dualconv.testing import emulated_cupy

    with emulated_cupy() as emu:
        import cupy                       # the stand-in (dualconv.testing.fake_cupy)
        model.to("cupy"); trainer.fit(...)
        print(emu.counters)               # kernel_launches, copy_bytes, transfers, syncs
        emu.reset_counters()

    with emulated_cupy(reuse_memory=True):  # every array from its pool, freed blocks reused
        ...

Within the block ``import cupy`` (and ``import cupyx``) gives the stand-in,
``dualconv.gpu_available()`` is True and the "cupy" backend runs on it; on exit
the real CuPy (if it was imported) is back. ``DUALCONV_EMULATE_GPU=1`` in the
environment switches it on for the whole process when dualconv is imported.
What each counter counts: dualconv/testing/fake_cupy/_counters.py. Kernels
run through g++, which must be installed. Stream capture and CUDA graphs:
fake_cupy/_device.py; memory pools: fake_cupy/cuda/memory.py.
"""
from __future__ import annotations

import contextlib
import sys
import types
from typing import Iterator

from . import fake_cupy
from .fake_cupy import _counters, _device, _native
from .fake_cupy.cuda import runtime as _runtime

ENV = "DUALCONV_EMULATE_GPU"


class Emulation:
    """A handle on the active stand-in: its module and its counters."""

    cupy = fake_cupy

    @property
    def counters(self) -> dict[str, int]:
        """The live counters (see fake_cupy/_counters.py for what counts)."""
        return _counters.COUNTERS

    def reset_counters(self) -> None:
        _counters.reset()


def _cupyx() -> types.ModuleType:
    module = types.ModuleType("cupyx", "cupyx for the emulated CuPy: nothing in it is emulated.")

    def __getattr__(name: str):
        raise AttributeError(f"cupyx.{name} is not implemented by the emulated CuPy")
    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return module


def _is_cupy(name: str) -> bool:
    return name in ("cupy", "cupyx") or name.startswith(("cupy.", "cupyx."))


def active() -> bool:
    """True while ``import cupy`` gives the stand-in."""
    return sys.modules.get("cupy") is fake_cupy


def install() -> None:
    """Make ``import cupy`` give the stand-in for the rest of the process."""
    for name in [n for n in sys.modules if _is_cupy(n)]:
        del sys.modules[name]
    cuda = fake_cupy.cuda
    sys.modules.update({"cupy": fake_cupy, "cupy.cuda": cuda, "cupy.cuda.runtime": _runtime,
                        "cupy.cuda.stream": cuda.stream, "cupy.cuda.graph": cuda.graph,
                        "cupy.cuda.memory": cuda.memory, "cupy.random": fake_cupy.random,
                        "cupyx": _cupyx()})


@contextlib.contextmanager
def emulated_cupy(memory_bytes: int | None = None, reuse_memory: bool = False,
                  sanitize: bool | None = None) -> Iterator[Emulation]:
    """Within the block, CuPy is the CPU stand-in (see the module docstring).

    ``memory_bytes`` sets the device memory it reports (default 16 GiB), for
    testing what code does when data does not fit. ``reuse_memory``: every new
    array comes from the current allocator, and a freed block goes to the next
    allocation of its size, as CuPy's pool does; a graph that writes into memory
    it no longer owns then spoils another array. Off, arrays come from a pool
    only during a capture or under ``cupy.cuda.using_allocator`` (faster).
    ``sanitize`` (None: $DUALCONV_EMULATE_SANITIZE): kernels compiled within the block
    are built with ASan and UBSan, so an out-of-bounds access or undefined behaviour
    aborts with a report; the process must have started with the ASan runtime preloaded
    (``python -m dualconv.testing.sanitized COMMAND``), and no kernel may have been
    compiled without them before (RuntimeError otherwise; see fake_cupy/_native.py).
    """
    sanitize = _native.sanitize_requested() if sanitize is None else sanitize
    saved_sanitize = _native.set_sanitize(True) if sanitize else None
    saved_modules = {n: m for n, m in sys.modules.items() if _is_cupy(n)}
    saved_memory, saved_reuse, saved_device = dict(_runtime._MEMORY), _device.REUSE[0], _device.save()
    if memory_bytes is not None:
        _runtime._MEMORY["total"] = int(memory_bytes)
    _device.REUSE[0] = bool(reuse_memory)
    install()
    try:
        yield Emulation()
    finally:
        for name in [n for n in sys.modules if _is_cupy(n)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        _runtime._MEMORY.update(saved_memory)
        _device.REUSE[0] = saved_reuse
        _device.restore(saved_device)
        if saved_sanitize is not None:
            _native.set_sanitize(saved_sanitize)
