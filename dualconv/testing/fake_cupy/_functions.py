"""cupy.* functions on emulated device arrays: creation, transfers, ufuncs, reductions.

Each takes device arrays (and scalars) only, as CuPy does, is counted (see
_counters.py) and runs through _device.py (recorded while a stream captures).
Results are allocated as CuPy allocates them: C-contiguous, except for the
order='K' functions (copy, *_like, astype), which keep the input's layout. ``__all__`` lists what the stand-in offers; every name
in it exists in CuPy 14 (a test checks it against the real package).
"""
from __future__ import annotations

import builtins
import sys
from typing import Any, Sequence

import numpy as np

from . import _array, _counters, _device
from ._array import device, ndarray, operand, wrap


# -- ufuncs ------------------------------------------------------------------------

def apply_ufunc(ufunc: np.ufunc, method: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``ufunc`` (a NumPy ufunc) on device operands: one kernel launch."""
    args = [operand(x, ufunc.__name__) for x in inputs]
    if ufunc is np.matmul and np.result_type(*args).kind in "fc":
        _device.refuse_cublas()
    out = kwargs.pop("out", None)
    for key in ("where",):
        if key in kwargs:
            kwargs[key] = operand(kwargs[key], ufunc.__name__)
    compute = getattr(ufunc, method)
    if out is not None or method == "at":
        if out is not None:
            outs = out if isinstance(out, tuple) else (out,)
            kwargs["out"] = tuple(device(o, f"{ufunc.__name__}(out=...)")._a for o in outs)
        _device.launch(compute, *args, **kwargs)
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    if method == "__call__" and ufunc.nout > 1:  # one kernel writing every output
        with np.errstate(all="ignore"):
            shapes = compute(*args, **kwargs)
        outs = tuple(_device.allocate(r.shape, r.dtype) for r in shapes)
        _device.launch(compute, *args, out=outs, **kwargs)
        return tuple(wrap(o) for o in outs)
    return wrap(_device.new(compute, *args, **kwargs))


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
    """where(c, x, y): one elementwise kernel. where(c) is nonzero(c): CuPy reads the
    count back to size the result (a transfer and a sync), then gathers."""
    if x is None and y is None:
        cond = operand(condition, "where")
        _device.to_host()
        _counters.launch()
        return tuple(wrap(i) for i in np.nonzero(cond))
    return wrap(_device.new(np.where, *(operand(a, "where") for a in (condition, x, y))))


def clip(a: Any, a_min: Any = None, a_max: Any = None) -> ndarray:
    return wrap(_device.new(np.clip, device(a, "clip")._a, operand(a_min, "clip"), operand(a_max, "clip")))


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
    return wrap(_device.new(np.allclose, operand(a, "allclose"), operand(b, "allclose"), rtol, atol,
                            equal_nan))


def array_equal(a1: Any, a2: Any, equal_nan: bool = False) -> ndarray:
    return wrap(_device.new(np.array_equal, operand(a1, "array_equal"), operand(a2, "array_equal"),
                            equal_nan))


# -- creation and transfers ---------------------------------------------------------------

def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False,
          ndmin: int = 0) -> ndarray:
    """A device array from a device array (a copy) or from host data (a transfer)."""
    if isinstance(obj, ndarray):
        if not copy and (dtype is None or np.dtype(dtype) == obj.dtype) and obj.ndim >= ndmin:
            return obj
        return wrap(_device.new(np.array, obj._a, dtype=dtype, order=order, ndmin=ndmin,
                                keep_layout=order in "KA", copies=True))
    _device.to_device()
    result = np.array(obj, dtype=dtype, order=order, ndmin=ndmin)
    if not _device.managed():
        return wrap(result)
    out = _device.allocate(result.shape, result.dtype, like=result)
    np.copyto(out, result)
    return wrap(out)


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
    return wrap(_device.allocate(shape, dtype, order=order))


def empty_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    """Uninitialized, laid out as ``a`` (order K) unless another order or shape is asked."""
    return wrap(_like_memory(device(a, "empty_like"), dtype, order, shape))


def _like_memory(a: ndarray, dtype: Any, order: str, shape: Any) -> np.ndarray:
    like = a._a if order in "KA" and shape is None else None
    return _device.allocate(a.shape if shape is None else shape, a.dtype if dtype is None else dtype,
                            like=like, order="F" if order == "F" else "C")


def _filled(memory: np.ndarray, value: Any) -> ndarray:
    _device.launch(np.ndarray.fill, memory, value)
    return wrap(memory)


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return _filled(_device.allocate(shape, dtype, order=order), 0)


def ones(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return _filled(_device.allocate(shape, dtype, order=order), 1)


def full(shape: Any, fill_value: Any, dtype: Any = None, order: str = "C") -> ndarray:
    value = operand(fill_value, "full")
    dtype = np.asarray(value).dtype if dtype is None else dtype
    return _filled(_device.allocate(shape, dtype, order=order), value)


def zeros_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    return _filled(_like_memory(device(a, "zeros_like"), dtype, order, shape), 0)


def ones_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    return _filled(_like_memory(device(a, "ones_like"), dtype, order, shape), 1)


def full_like(a: Any, fill_value: Any, dtype: Any = None, order: str = "K", subok: Any = None,
              shape: Any = None) -> ndarray:
    return _filled(_like_memory(device(a, "full_like"), dtype, order, shape), operand(fill_value, "full_like"))


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> ndarray:
    if stop is None:
        start, stop = 0, start
    return wrap(_device.new(np.arange, start, stop, step, dtype=dtype))


def concatenate(arrays: Sequence[Any], axis: int = 0, out: Any = None, *, dtype: Any = None,
                casting: str = "same_kind") -> ndarray:
    parts = [device(a, "concatenate")._a for a in arrays]
    return wrap(_device.new(np.concatenate, parts, axis=axis, dtype=dtype, copies=True))


def stack(arrays: Sequence[Any], axis: int = 0, out: Any = None, *, dtype: Any = None,
          casting: str = "same_kind") -> ndarray:
    parts = [device(a, "stack")._a for a in arrays]
    return wrap(_device.new(np.stack, parts, axis=axis, dtype=dtype, copies=True))


def copyto(dst: Any, src: Any, casting: str = "same_kind", where: Any = None) -> None:
    """One elementwise kernel writing ``src`` into ``dst`` (where ``where`` is True)."""
    target = device(dst, "copyto")
    mask = True if where is None else operand(where, "copyto")
    _device.launch(np.copyto, target._a, operand(src, "copyto"), casting=casting, where=mask,
                   copied_bytes=target._a.nbytes)


def copy(a: Any, order: str = "K") -> ndarray:
    return device(a, "copy").copy(order)


def reshape(a: Any, newshape: Any, order: str = "C") -> ndarray:
    return device(a, "reshape").reshape(newshape, order=order)


def transpose(a: Any, axes: Any = None) -> ndarray:
    return device(a, "transpose").transpose(axes)


def squeeze(a: Any, axis: Any = None) -> ndarray:
    return device(a, "squeeze").squeeze(axis)


def ravel(a: Any, order: str = "C") -> ndarray:
    return device(a, "ravel").ravel(order)


def get_default_memory_pool() -> Any:
    """The pool that the default allocator draws from (see cuda/memory.py)."""
    from .cuda import memory
    return memory._DEFAULT_POOL


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
           "expand_dims", "shape", "ndim", "size", "get_default_memory_pool"]


_array._functions = sys.modules[__name__]  # ndarray's methods reach these functions
