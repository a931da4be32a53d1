"""The CPU emulation of kernels/*.cu for the kernel tests, built by the emulated CuPy's g++ harness.

``build(out_dir)`` compiles ``sources.module_source()`` (every kernels/*.cu,
the source CuPy compiles) with dualconv/testing/fake_cupy/emulation_harness.cpp
into a shared library; ``Emulator(lib)`` runs the plans of
``dualconv.kernels.cuda_plans`` on NumPy arrays with the same grid, block and
arguments that CuPy would launch, through the same ``execute()``, each argument
checked against the kernel's C++ signature.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dualconv.kernels import checks, cuda, cuda_plans, sources
from dualconv.kernels.launch import Launch, execute
from dualconv.testing.fake_cupy import _native

CXX = shutil.which("g++")


def build(out_dir: Path, sanitize: bool = False) -> Path:
    """Compile the harness and every kernels/*.cu into out_dir; returns the .so path."""
    return _native.build(sources.module_source(), cuda.NAME_EXPRESSIONS, out_dir, sanitize)


class Emulator:
    """Runs kernel launches on the CPU through the harness library."""

    def __init__(self, lib_path: Path):
        self.module = _native.NativeModule(lib_path)
        self.launched: set[str] = set()

    def names(self) -> set[str]:
        """The kernel instantiations compiled into the library."""
        return self.module.names()

    def _call(self, launch: Launch, args: tuple[Any, ...]) -> None:
        self.module.launch(launch.name, launch.grid, launch.block, args)
        self.launched.add(launch.name)

    def run(self, launch: Launch) -> Any:
        """Execute a plan; returns what the cpu.py function would."""
        return execute(launch, np, self._call)

    def call(self, kernel: str, *args: Any) -> Any:
        """``kernel`` run with the kernel signature, e.g. call("im2col", x, Window(3, 3, 1, 1, 0, 0)),
        as the dispatch point runs it: checks.py once, then the plan (which trusts its
        arguments), so a bad argument raises here instead of reading out of bounds."""
        getattr(checks, kernel)(*args)
        return self.run(cuda_plans.PLANS[kernel](*args))
