"""A CPU stand-in for CuPy 14 (see dualconv.testing.emulation for how to switch it on).

Everything here exists in CuPy with the same meaning; what the stand-in does
not implement raises AttributeError, so code tested against it cannot come to
rely on something CuPy lacks. Device arrays live in host memory but follow
CuPy's rules; RawModule kernels run through g++ (see _raw.py, _native.py).
Streams capture into CUDA graphs as in CuPy 14: recorded, not run, and
refused where CuPy refuses (see _device.py); memory pools: cuda/memory.py.
"""
from __future__ import annotations

import numpy as _np

from . import _counters, cuda, lib, random
from ._array import ndarray
from ._functions import *  # noqa: F401,F403
from ._functions import __all__ as _function_names
from ._raw import RawKernel, RawModule

__version__ = "14.2.0"
_dualconv_emulated = True

bool_, int8, int16, int32, int64 = _np.bool_, _np.int8, _np.int16, _np.int32, _np.int64
uint8, uint16, uint32, uint64 = _np.uint8, _np.uint16, _np.uint32, _np.uint64
float16, float32, float64 = _np.float16, _np.float32, _np.float64
dtype, newaxis, inf, nan, pi, e = _np.dtype, _np.newaxis, _np.inf, _np.nan, _np.pi, _np.e

__all__ = [*_function_names, "ndarray", "RawKernel", "RawModule", "cuda", "lib", "random", "bool_", "int8",
           "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
           "float64", "dtype", "newaxis", "inf", "nan", "pi", "e"]


def __getattr__(name: str):
    raise AttributeError(f"cupy.{name} is not implemented by the emulated CuPy "
                         f"(dualconv.testing.emulated_cupy)")
