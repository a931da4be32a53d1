"""cupy.random: not emulated.

CuPy's generators (XORWOW, sized by the GPU's SM count) cannot be reproduced
on the CPU, so the stand-in offers none: code that needs random numbers on
the device should derive them from a counter (see dualconv.layers.dropout).
"""
from __future__ import annotations

__all__: list[str] = []


def __getattr__(name: str):
    raise AttributeError(f"cupy.random.{name} is not emulated: the emulated CuPy has no random "
                         f"generators (CuPy's streams depend on the GPU model)")
