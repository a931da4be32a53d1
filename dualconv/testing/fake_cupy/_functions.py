"""cupy.* functions on emulated device arrays: creation, transfers, ufuncs, reductions.

Each takes device arrays (and scalars) only, as CuPy does, and is counted
(see _counters.py). ``__all__`` lists what the stand-in offers; every name
in it exists in CuPy 14 (a test checks it against the real package).
"""
from __future__ import annotations

import builtins
import sys
from typing import Any, Sequence

import numpy as np

from . import _array, _counters
from ._array import device, ndarray, operand, wrap


# -- ufuncs ------------------------------------------------------------------------

def apply_ufunc(ufunc: np.ufunc, method: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``ufunc`` (a NumPy ufunc) on device operands: one kernel launch."""
    args = [operand(x, ufunc.__name__) for x in inputs]
    out = kwargs.pop("out", None)
    if out is not None:
        outs = out if isinstance(out, tuple) else (out,)
        kwargs["out"] = tuple(device(o, f"{ufunc.__name__}(out=...)")._a for o in outs)
    for key in ("where",):
        if key in kwargs:
            kwargs[key] = operand(kwargs[key], ufunc.__name__)
    _counters.launch()
    with np.errstate(all="ignore"):  # a GPU neither warns nor raises on overflow or 0/0
        result = getattr(ufunc, method)(*args, **kwargs)
    if out is not None:
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    if isinstance(result, tuple):
        return tuple(wrap(r) for r in result)
    return wrap(result)


class _Ufunc:
    """A cupy ufunc: calls the NumPy ufunc of the same name on device arrays."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return apply_ufunc(self._ufunc, "__call__", args, kwargs)

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}'>"


UFUNCS = ("add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "power",
          "remainder", "negative", "positive", "absolute", "abs", "sign", "exp", "exp2", "expm1",
          "log", "log2", "log10", "log1p", "sqrt", "square", "reciprocal", "tanh", "sinh", "cosh",
          "sin", "cos", "tan", "arctan", "maximum", "minimum", "fmax", "fmin", "logaddexp",
          "greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "logical_and",
          "logical_or", "logical_xor", "logical_not", "isnan", "isinf", "isfinite", "floor",
          "ceil", "rint", "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "left_shift",
          "right_shift")
for _name in UFUNCS:
    globals()[_name] = _Ufunc(getattr(np, _name))


def where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None and y is None:
        _counters.launch()
        return tuple(wrap(i) for i in np.nonzero(operand(condition, "where")))
    _counters.launch()
    return wrap(np.where(*(operand(a, "where") for a in (condition, x, y))))


def clip(a: Any, a_min: Any = None, a_max: Any = None) -> ndarray:
    _counters.launch()
    return wrap(np.clip(device(a, "clip")._a, operand(a_min, "clip"), operand(a_max, "clip")))


def matmul(a: Any, b: Any) -> ndarray:
    return apply_ufunc(np.matmul, "__call__", (a, b), {})


def dot(a: Any, b: Any) -> ndarray:
    return device(a, "dot").dot(b)


# -- reductions ----------------------------------------------------------------------

def _reduction(name: str):
    def function(a: Any, *args: Any, **kwargs: Any) -> ndarray:
        return getattr(device(a, name), name)(*args, **kwargs)
    function.__name__ = name
    return function


for _name in ("sum", "mean", "max", "min", "argmax", "argmin", "prod", "var", "std", "any", "all",
              "cumsum"):
    globals()[_name] = _reduction(_name)
amax, amin = globals()["max"], globals()["min"]


def allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> ndarray:
    _counters.launch()
    return wrap(np.allclose(operand(a, "allclose"), operand(b, "allclose"), rtol, atol, equal_nan))


def array_equal(a1: Any, a2: Any, equal_nan: bool = False) -> ndarray:
    _counters.launch()
    return wrap(np.array_equal(operand(a1, "array_equal"), operand(a2, "array_equal"), equal_nan))


# -- creation and transfers ---------------------------------------------------------------

def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False,
          ndmin: int = 0) -> ndarray:
    """A device array from a device array (a copy) or from host data (a transfer)."""
    if isinstance(obj, ndarray):
        if not copy and (dtype is None or np.dtype(dtype) == obj.dtype) and obj.ndim >= ndmin:
            return obj
        result = np.array(obj._a, dtype=dtype, order=order, ndmin=ndmin)
        _counters.launch(result.nbytes)
        return wrap(result)
    _counters.to_device()
    return wrap(np.array(obj, dtype=dtype, order=order, ndmin=ndmin))


def asarray(a: Any, dtype: Any = None, order: Any = None, *, blocking: bool = False) -> ndarray:
    return array(a, dtype=dtype, copy=False, order=order or "K")


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    if isinstance(a, ndarray) and a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return array(a, dtype=dtype, copy=True, order="C")


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, *,
            blocking: bool = True) -> np.ndarray:
    """A NumPy array from a device array (a transfer) or from host data (as it is)."""
    if isinstance(a, ndarray):
        return a.get(out=out, order=order)
    return np.asarray(a, order=order)


def get_array_module(*args: Any) -> Any:
    """This module when any argument is a device array, else numpy."""
    if builtins.any(isinstance(a, ndarray) for a in args):
        return sys.modules[__name__.rsplit(".", 1)[0]]
    return np


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return wrap(np.empty(shape, dtype=dtype, order=order))


def empty_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    return wrap(np.empty_like(device(a, "empty_like")._a, dtype=dtype, shape=shape))


def _filled(value: Any, shape: Any, dtype: Any) -> ndarray:
    _counters.launch()
    return wrap(np.full(shape, value, dtype=dtype))


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return _filled(0, shape, dtype)


def ones(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return _filled(1, shape, dtype)


def full(shape: Any, fill_value: Any, dtype: Any = None, order: str = "C") -> ndarray:
    return _filled(operand(fill_value, "full"), shape, dtype)


def _like(a: Any, value: Any, dtype: Any, shape: Any) -> ndarray:
    a = device(a, "*_like")
    return _filled(value, a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


def zeros_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    return _like(a, 0, dtype, shape)


def ones_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    return _like(a, 1, dtype, shape)


def full_like(a: Any, fill_value: Any, dtype: Any = None, order: str = "K", subok: Any = None,
              shape: Any = None) -> ndarray:
    return _like(a, operand(fill_value, "full_like"), dtype, shape)


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> ndarray:
    _counters.launch()
    if stop is None:
        start, stop = 0, start
    return wrap(np.arange(start, stop, step, dtype=dtype))


def concatenate(arrays: Sequence[Any], axis: int = 0, out: Any = None, *, dtype: Any = None,
                casting: str = "same_kind") -> ndarray:
    result = np.concatenate([device(a, "concatenate")._a for a in arrays], axis=axis, dtype=dtype)
    _counters.launch(result.nbytes)
    return wrap(result)


def stack(arrays: Sequence[Any], axis: int = 0, out: Any = None, *, dtype: Any = None,
          casting: str = "same_kind") -> ndarray:
    result = np.stack([device(a, "stack")._a for a in arrays], axis=axis, dtype=dtype)
    _counters.launch(result.nbytes)
    return wrap(result)


def copyto(dst: Any, src: Any, casting: str = "same_kind", where: Any = None) -> None:
    """One elementwise kernel writing ``src`` into ``dst`` (where ``where`` is True)."""
    target = device(dst, "copyto")
    mask = True if where is None else operand(where, "copyto")
    _counters.launch(target._a.nbytes)
    np.copyto(target._a, operand(src, "copyto"), casting=casting, where=mask)


def copy(a: Any, order: str = "K") -> ndarray:
    return device(a, "copy").copy()


def reshape(a: Any, newshape: Any, order: str = "C") -> ndarray:
    return device(a, "reshape").reshape(newshape, order=order)


def transpose(a: Any, axes: Any = None) -> ndarray:
    return device(a, "transpose").transpose(axes)


def squeeze(a: Any, axis: Any = None) -> ndarray:
    return device(a, "squeeze").squeeze(axis)


def ravel(a: Any, order: str = "C") -> ndarray:
    return device(a, "ravel").ravel(order)


def expand_dims(a: Any, axis: Any) -> ndarray:
    return wrap(np.expand_dims(device(a, "expand_dims")._a, axis))


def shape(a: Any) -> tuple[int, ...]:
    return device(a, "shape").shape


def ndim(a: Any) -> int:
    return device(a, "ndim").ndim


def size(a: Any, axis: Any = None) -> int:
    return device(a, "size").size if axis is None else device(a, "size").shape[axis]


__all__ = [*UFUNCS, "where", "clip", "matmul", "dot", "sum", "mean", "max", "min", "amax", "amin",
           "argmax", "argmin", "prod", "var", "std", "any", "all", "cumsum", "allclose",
           "array_equal", "array", "asarray", "ascontiguousarray", "asnumpy", "get_array_module",
           "empty", "empty_like", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like",
           "arange", "concatenate", "stack", "copyto", "copy", "reshape", "transpose", "squeeze", "ravel",
           "expand_dims", "shape", "ndim", "size"]


_array._functions = sys.modules[__name__]  # ndarray's methods reach these functions
