"""How many kernels CuPy 14 launches for a reduction, with CUB on (CUPY_ACCELERATORS
defaults to "cub"): read from _routines_statistics.pyx, _routines_math.pyx and
cuda/cub.pyx.

- sum, prod, max, min, argmax, argmin first try CUB (cub.cub_reduction). CUB takes a
  C- or F-contiguous array in a dtype it supports (sum and prod: int64, uint64 and
  the floats and complexes; the others: every integer, float and complex type) when
  ``dtype`` is None or the array's own. A full reduction is one DeviceReduce (after a
  copy to C order if the array is F-ordered only), plus, for argmax/argmin, an astype
  of the index to int64. A reduction over the axes that are contiguous in memory (the
  last ones of a C array, the first ones of an F array) is one DeviceSegmentedReduce;
  argmax/argmin over an axis has no CUB path. With ``out``, one copy into it follows.
  Anything else is one reduction kernel of CuPy's own.
- mean: a CUB sum and an in-place true_divide (two launches) where CUB applies, else
  one kernel; then an astype when the result's dtype is fixed (integer and float16
  inputs, or an explicit dtype) and no ``out`` was given.
- var: a mean (dtype given explicitly, so it ends with the astype) and one kernel;
  std adds a sqrt. any, all and cumsum count one.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CUB_SUM_DTYPES = frozenset(np.dtype(t) for t in (np.int64, np.uint64, np.float16, np.float32,
                                                 np.float64, np.complex64, np.complex128))
CUB_DTYPES = CUB_SUM_DTYPES | frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16,
                                                              np.int32, np.uint32))
PARAMETERS = {
    "sum": ("axis", "dtype", "out", "keepdims"), "prod": ("axis", "dtype", "out", "keepdims"),
    "max": ("axis", "out", "keepdims"), "min": ("axis", "out", "keepdims"),
    "argmax": ("axis", "out"), "argmin": ("axis", "out"),
    "mean": ("axis", "dtype", "out", "keepdims"),
    "var": ("axis", "dtype", "out", "ddof", "keepdims"), "std": ("axis", "dtype", "out", "ddof", "keepdims"),
    "any": ("axis", "out", "keepdims"), "all": ("axis", "out", "keepdims"),
    "cumsum": ("axis", "dtype", "out"),
}
"""Each reduction method's positional parameters after self, as ndarray names them."""


def _reduced_axes(ndim: int, axis: Any) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(int(a) % max(ndim, 1) for a in axes))


def _cub(a: np.ndarray, op: str, axis: Any, dtype: Any, out: Any) -> tuple[int, int] | None:
    """(launches, bytes copied) of cub.cub_reduction, or None where it declines."""
    arg = op in ("argmax", "argmin")
    if arg and dtype is not None:
        return None
    if dtype is None:
        supported = CUB_SUM_DTYPES if op in ("sum", "prod") else CUB_DTYPES
    elif np.dtype(dtype) == a.dtype:
        supported = CUB_DTYPES
    else:
        return None
    c_order, f_order = a.flags.c_contiguous, a.flags.f_contiguous
    if a.dtype not in supported or not (c_order or f_order):
        return None
    reduced, tail = _reduced_axes(a.ndim, axis), int(out is not None)
    if len(reduced) == a.ndim:  # one DeviceReduce, from C order
        copied = 0 if c_order else a.nbytes
        return 1 + int(copied > 0) + int(arg) + tail, copied
    if arg:
        return None
    consecutive = reduced == tuple(range(reduced[0], reduced[-1] + 1))
    if consecutive and (reduced[-1] == a.ndim - 1 if c_order else reduced[0] == 0):
        return 1 + tail, 0
    return None


def _mean(a: np.ndarray, axis: Any, dtype: Any, out: Any) -> tuple[int, int]:
    dtype_sum = dtype_out = dtype
    if dtype is None and a.dtype.char not in "dD":
        if a.dtype.kind in "iub":
            dtype_sum = dtype_out = np.float64
        elif a.dtype.char == "e":
            dtype_sum, dtype_out = np.float32, np.float16
    elif dtype is not None and np.dtype(dtype).kind in "iub":
        dtype_sum, dtype_out = np.float64, dtype
    cub = _cub(a, "sum", axis, dtype_sum, out) if a.size else None
    launches, copied = (cub[0] + 1, cub[1]) if cub is not None else (1, 0)
    return launches + int(dtype_out is not None and out is None), copied


def launches(name: str, a: np.ndarray, args: dict[str, Any]) -> tuple[int, int]:
    """(kernel launches, bytes copied) of ``a.<name>(**args)`` on CuPy 14 with CUB."""
    axis, dtype, out = args.get("axis"), args.get("dtype"), args.get("out")
    if name in ("sum", "prod", "max"):
        return _cub(a, name, axis, dtype, out) or (1, 0)
    if name == "min":  # _ndarray_min hands out and dtype to CUB swapped: out means no CUB
        return (_cub(a, name, axis, None, None) or (1, 0)) if out is None else (1, 0)
    if name in ("argmax", "argmin"):
        recast = int(name == "argmax" and a.dtype == np.bool_ and a.flags.f_contiguous
                     and not a.flags.c_contiguous)  # CuPy casts an F-ordered bool to int8 first
        n, copied = _cub(a, name, axis, None, out) or (1, 0)
        return n + recast, copied
    if name == "mean":
        return _mean(a, axis, dtype, out)
    if name in ("var", "std"):
        mean_dtype = np.float64 if dtype is None and a.dtype.kind in "biu" else (dtype or a.dtype)
        n, copied = _mean(a, tuple(range(a.ndim)) if axis is None else axis, mean_dtype, None)
        return n + 1 + int(name == "std"), copied
    return 1, 0
