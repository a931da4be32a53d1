"""cupy.lib.stride_tricks.as_strided: a view of a device array with the shape and strides
(in bytes) given, over the same memory, as CuPy makes it (an ndarray on x's memory
pointer: no copy, no launch, no check that the view stays inside the memory). Only
as_strided is public here, as every name the stand-in offers must exist in CuPy."""
from __future__ import annotations

import numpy as _np

from .. import _array

__all__ = ["as_strided"]


def as_strided(x: object, shape: object = None, strides: object = None) -> object:
    a = _array.device(x, "as_strided")._a
    return _array.wrap(_np.lib.stride_tricks.as_strided(a, a.shape if shape is None else tuple(shape),
                                                        a.strides if strides is None else tuple(strides)))
