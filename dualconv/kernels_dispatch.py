"""Pick the kernel implementation that matches an array module.

Only im2col, col2im and the pooling kernels exist twice (kernels_numpy.py,
kernels_cuda.py); everything else is written once against ``xp``.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np


def kernels_for(xp: ModuleType) -> ModuleType:
    """kernels_numpy for numpy, kernels_cuda for cupy."""
    if xp is np:
        from . import kernels_numpy
        return kernels_numpy
    from . import kernels_cuda
    return kernels_cuda
