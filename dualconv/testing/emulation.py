"""Switch the CPU stand-in for CuPy on: ``emulated_cupy()`` or ``DUALCONV_EMULATE_GPU=1``.

    from dualconv.testing import emulated_cupy

    with emulated_cupy() as emu:
        import cupy                       # the stand-in (dualconv.testing.fake_cupy)
        model.to("cupy"); trainer.fit(...)
        print(emu.counters)               # kernel_launches, copy_bytes, transfers, syncs
        emu.reset_counters()

Within the block ``import cupy`` (and ``import cupyx``) gives the stand-in,
``dualconv.gpu_available()`` is True and the "cupy" backend runs on it; on exit
the real CuPy (if it was imported) is back. ``DUALCONV_EMULATE_GPU=1`` in the
environment switches it on for the whole process when dualconv is imported.
What each counter counts: dualconv/testing/fake_cupy/_counters.py. Kernels
run through g++, which must be installed.
"""
from __future__ import annotations

import contextlib
import sys
import types
from typing import Iterator

from . import fake_cupy
from .fake_cupy import _counters
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
    sys.modules.update({"cupy": fake_cupy, "cupy.cuda": fake_cupy.cuda,
                        "cupy.cuda.runtime": _runtime, "cupy.random": fake_cupy.random,
                        "cupyx": _cupyx()})


@contextlib.contextmanager
def emulated_cupy(memory_bytes: int | None = None) -> Iterator[Emulation]:
    """Within the block, CuPy is the CPU stand-in (see the module docstring).

    ``memory_bytes`` sets the device memory it reports (default 16 GiB), for
    testing what code does when data does not fit.
    """
    saved_modules = {n: m for n, m in sys.modules.items() if _is_cupy(n)}
    saved_memory = dict(_runtime._MEMORY)
    if memory_bytes is not None:
        _runtime._MEMORY["total"] = int(memory_bytes)
    install()
    try:
        yield Emulation()
    finally:
        for name in [n for n in sys.modules if _is_cupy(n)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        _runtime._MEMORY.update(saved_memory)
