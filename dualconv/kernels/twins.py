"""Which module holds each kernel's twin: the NumPy side for numpy arrays, the CUDA side else.

Every kernel's twins live in cpu.py and cuda.py unless HOMES names other modules. The side
depends on the array's type alone, so the dispatch point (dualconv.kernels) finds a
twin once per (kernel, type of the first argument) and then by one dict lookup.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import get_array_module
from .checks_many import PER_CALL as MANY_KERNELS

STEP_KERNELS = ("step_begin", "gather_rows", "sgd_update_guarded_at", "adam_update_guarded_at",
                "flag_nonfinite_loss_at", "dropout_forward_at", "gemm", "gemm_sum_parts")
"""A captured step's kernels (dualconv/step_graph.py): their checks are in checks_step.py."""

HOMES = {
    "conv2d_forward": ("cpu_conv", "cuda_conv"), "conv2d_backward": ("cpu_conv", "cuda_conv"),
    "dense_forward": ("cpu_dense", "cuda_dense"), "dense_backward": ("cpu_dense", "cuda_dense"),
    **{kernel: ("cpu_fused", "cuda") for kernel in (
        "sgd_update", "adam_update", "sgd_update_guarded", "adam_update_guarded",
        "flag_nonfinite_loss", "softmax_cross_entropy", "dropout_forward")},
    **{kernel: ("cpu_step", "cuda_step") for kernel in STEP_KERNELS},
    **{kernel: ("cpu_fused", "cuda_many") for kernel in MANY_KERNELS},
}
"""The kernels whose twins live outside cpu.py and cuda.py: kernel -> (its NumPy twin's
module, its CUDA twin's module). Every other kernel's twins are in cpu and cuda."""


def twin_for(xp: ModuleType, kernel: str | None = None) -> ModuleType:
    """The module holding ``kernel``'s twin for an array module (numpy picks the NumPy side,
    cupy the CUDA one): the HOMES entry, else cpu or cuda."""
    side = 0 if xp is np else 1
    module = HOMES[kernel][side] if kernel in HOMES else ("cpu", "cuda")[side]
    return importlib.import_module(f"{__package__}.{module}")


_twins: dict[tuple[str, type], ModuleType] = {}


def twin_of(kernel: str, first: Any) -> ModuleType:
    """twin_for(the array module of ``first``, kernel), remembered per (kernel, type of
    first): the side depends on the array's type alone, so later calls cost a dict lookup.
    A list kernel's first argument is a tuple of arrays: its first array decides."""
    if type(first) is tuple:
        first = first[0] if first else np.empty(0)
    try:
        return _twins[kernel, type(first)]
    except KeyError:
        module = _twins[kernel, type(first)] = twin_for(get_array_module(first), kernel)
        return module
