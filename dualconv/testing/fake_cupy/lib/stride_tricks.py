"""cupy.lib.stride_tricks.as_strided: a view of a device array with the shape and strides
(in bytes) given, over the same memory, as CuPy makes it (an ndarray on x's memory
pointer: no copy, no launch, no check that the view stays inside the memory)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .._array import device, wrap

__all__ = ["as_strided"]


def as_strided(x: Any, shape: Any = None, strides: Any = None) -> Any:
    a = device(x, "as_strided")._a
    return wrap(np.lib.stride_tricks.as_strided(a, a.shape if shape is None else tuple(shape),
                                                a.strides if strides is None else tuple(strides)))
