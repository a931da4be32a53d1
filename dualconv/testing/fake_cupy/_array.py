"""The emulated device array: host memory behind CuPy's rules.

A ``ndarray`` wraps a NumPy array that stands for device memory. It is not a
NumPy array and never turns into one implicitly: ``np.asarray(d)`` raises
TypeError, a NumPy array mixed into a device operation raises TypeError, and
reductions return 0-d device arrays. The ways back to the host are .get(),
cupy.asnumpy, float/int/bool/complex and .item(), as in CuPy. Every operation
is counted (see _counters.py) and runs through _device.py, which records it
instead while a stream captures. New arrays are C-contiguous as CuPy makes
them, except where CuPy's order is K (astype, copy(order='K'), *_like).
"""
from __future__ import annotations

import numbers
import operator
from typing import Any

import numpy as np

from . import _device, _reductions

_functions: Any = None
"""The module of CuPy's functions (_functions.py), which imports this one and sets this
name when it loads: ndarray's ufunc, array-function and clip calls go there."""

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")


def wrap(a: Any) -> "ndarray":
    """A device array holding ``a`` (a NumPy array or scalar; not copied)."""
    out = ndarray.__new__(ndarray)
    out._a = a if type(a) is np.ndarray else np.asarray(a)
    return out


def operand(x: Any, what: str) -> Any:
    """The value to compute with: a device array's memory, or a scalar as it is.
    Host arrays and anything else raise TypeError, as in CuPy."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (numbers.Number, np.generic)) or x is None:
        return x
    raise TypeError(f"Unsupported type {type(x)}" + (f" (in {what})" if what else ""))


def device(x: Any, what: str) -> "ndarray":
    if not isinstance(x, ndarray):
        raise TypeError(f"{what}: expected a cupy.ndarray, got {type(x)}")
    return x


def _index(key: Any) -> tuple[Any, bool]:
    """(the index for NumPy, whether it is advanced indexing, i.e. launches a kernel)."""
    items = key if isinstance(key, tuple) else (key,)
    out, advanced = [], False
    for item in items:
        if isinstance(item, ndarray):
            out.append(item._a)
            advanced = True
        elif isinstance(item, (np.ndarray, list)):
            _device.to_device()  # CuPy copies a host index to the device first
            out.append(np.asarray(item))
            advanced = True
        else:
            out.append(item)
    return (tuple(out) if isinstance(key, tuple) else out[0]), advanced


def _probe(a: np.ndarray, index: Any) -> np.ndarray:
    """a[index] with every index array zeroed: the shape and dtype of a gather whose
    indices are not computed yet (during a capture)."""
    items = index if isinstance(index, tuple) else (index,)
    safe = tuple(np.zeros_like(i) if isinstance(i, np.ndarray) and i.dtype != bool else i for i in items)
    return a[safe if isinstance(index, tuple) else safe[0]]


def _reduction(name: str):
    compute = getattr(np.ndarray, name)

    def method(self: "ndarray", *args: Any, **kwargs: Any) -> "ndarray":
        kwargs.update(zip(_reductions.PARAMETERS[name], args))
        n, copied = _reductions.launches(name, self._a, kwargs)
        out = kwargs.pop("out", None)
        if out is not None:
            _device.launch(compute, self._a, out=device(out, name)._a, launches=n, copied_bytes=copied,
                           **kwargs)
            return out
        return wrap(_device.new(compute, self._a, launches=n, copied_bytes=copied, **kwargs))
    method.__name__ = name
    method.__doc__ = (f"{name} on the device; returns a device array (0-d for a full reduction). "
                      f"Counted as CuPy launches it (_reductions.py).")
    return method


def _operator(ufunc: np.ufunc, reflected: bool = False, inplace: bool = False):
    def method(self: "ndarray", other: Any) -> Any:
        if inplace:
            return ufunc(self, other, out=self)
        return ufunc(other, self) if reflected else ufunc(self, other)
    return method


def _read(convert: Any):
    """A method that reads the array back to the host (a transfer and a sync) and converts it."""
    def method(self: "ndarray") -> Any:
        _device.to_host()
        return convert(self._a)
    return method


def _unary(ufunc: np.ufunc):
    return lambda self: ufunc(self)


class ndarray:
    """cupy.ndarray on the CPU (see the module docstring)."""

    __slots__ = ("_a", "__weakref__")  # CuPy's ndarray takes weak references too
    __array_priority__ = 100
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: Any, dtype: Any = float, order: str = "C") -> None:
        self._a = np.empty(shape, dtype=dtype, order=order)

    # -- NumPy interoperation, as CuPy does it ---------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(IMPLICIT)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _functions.apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        name = getattr(func, "__name__", "")
        impl = getattr(_functions, name, None) if getattr(func, "__module__", "") == "numpy" else None
        if impl is None or name.startswith("_") or name not in _functions.__all__:
            return NotImplemented
        return impl(*args, **kwargs)

    # -- attributes ---------------------------------------------------------------
    # read through operator.attrgetter, a C getter: CuPy's attributes are C attributes, so
    # reading one costs no Python frame (no profiler event) around the caller's code
    shape = property(operator.attrgetter("_a.shape"))
    dtype = property(operator.attrgetter("_a.dtype"))
    ndim = property(operator.attrgetter("_a.ndim"))
    size = property(operator.attrgetter("_a.size"))
    nbytes = property(operator.attrgetter("_a.nbytes"))
    itemsize = property(operator.attrgetter("_a.itemsize"))
    strides = property(operator.attrgetter("_a.strides"))
    flags = property(operator.attrgetter("_a.flags"))
    T = property(lambda self: wrap(self._a.T))

    @property
    def device(self) -> Any:
        from .cuda import Device
        return Device(0)

    @property
    def data(self) -> Any:
        """A cupy.cuda.MemoryPointer to the first element (``.data.ptr``: its address, which
        the emulated kernels read as host memory). One Python frame, as a C attribute in CuPy
        costs none: a list kernel reads it for every array."""
        pointer = _new(_POINTER or _pointer_type())
        a = self._a
        pointer.mem, pointer.device_id, pointer._raw = None, 0, a
        pointer.ptr = a.__array_interface__["data"][0]
        return pointer

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- back to the host ----------------------------------------------------------
    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> np.ndarray:
        """A NumPy copy of the array (one device-to-host transfer)."""
        _device.to_host()
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def item(self, *args: Any) -> Any:
        _device.to_host()
        return self._a.item(*args)

    tolist = _read(np.ndarray.tolist)
    __float__, __int__, __complex__, __bool__ = _read(float), _read(int), _read(complex), _read(bool)
    __repr__, __str__ = _read(repr), _read(str)

    # -- views and copies ----------------------------------------------------------
    def reshape(self, *shape: Any, order: str = "C") -> "ndarray":
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        result = self._a.reshape(shape, order=order)
        if result.size and not np.may_share_memory(result, self._a):
            return wrap(_device.new(np.reshape, self._a, shape, order=order, copies=True))
        return wrap(result)

    def ravel(self, order: str = "C") -> "ndarray":
        return self.reshape(-1, order=order)

    def flatten(self, order: str = "C") -> "ndarray":
        return wrap(_device.new(np.ndarray.flatten, self._a, order, copies=True))

    def transpose(self, *axes: Any) -> "ndarray":
        return wrap(self._a.transpose(*axes))

    def swapaxes(self, a: int, b: int) -> "ndarray":
        return wrap(self._a.swapaxes(a, b))

    def squeeze(self, axis: Any = None) -> "ndarray":
        return wrap(self._a.squeeze(axis))

    def view(self, dtype: Any = None) -> "ndarray":
        return wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def copy(self, order: str = "C") -> "ndarray":
        """A copy, C-contiguous by default; order='K' keeps the layout (CuPy's orders)."""
        return wrap(_device.new(np.array, self._a, order=order, keep_layout=order in "KA",
                                copies=True))

    def astype(self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None,
               copy: bool = True) -> "ndarray":
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        return wrap(_device.new(np.ndarray.astype, self._a, dtype, order=order,
                                keep_layout=order in "KA", copies=True))

    def fill(self, value: Any) -> None:
        _device.launch(np.ndarray.fill, self._a, operand(value, "fill"))

    # -- indexing ------------------------------------------------------------------
    def __getitem__(self, key: Any) -> "ndarray":
        index, advanced = _index(key)
        if not advanced:
            view = self._a[index]
            if not isinstance(view, np.ndarray):  # NumPy gave a scalar; CuPy gives a 0-d view
                view = self._a[(*index, Ellipsis) if isinstance(index, tuple) else (index, Ellipsis)]
            return wrap(view)
        return wrap(_device.new(operator.getitem, self._a, index, probe=_probe))

    def __setitem__(self, key: Any, value: Any) -> None:
        index, _ = _index(key)
        if isinstance(value, np.ndarray):
            _device.to_device()
        else:
            value = operand(value, "__setitem__")
        _device.launch(operator.setitem, self._a, index, value)

    # -- compute -------------------------------------------------------------------
    # the reductions (sum, mean, ...) are attached after the class: see REDUCTIONS

    def dot(self, other: Any) -> "ndarray":
        return np.matmul(self, other) if self.ndim and getattr(other, "ndim", 0) else np.multiply(self, other)

    def clip(self, min: Any = None, max: Any = None) -> "ndarray":
        return _functions.clip(self, min, max)

    __lt__, __le__, __gt__, __ge__ = (_operator(np.less), _operator(np.less_equal),
                                      _operator(np.greater), _operator(np.greater_equal))
    __eq__, __ne__ = _operator(np.equal), _operator(np.not_equal)  # type: ignore[assignment]
    __neg__, __pos__, __abs__, __invert__ = (_unary(np.negative), _unary(np.positive),
                                             _unary(np.absolute), _unary(np.invert))


# a + b, b + a and a += b for each arithmetic operator, as CuPy's ndarray has them;
# a @= b exists in neither CuPy nor this stand-in.
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
           "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "matmul": np.matmul,
           "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
           "lshift": np.left_shift, "rshift": np.right_shift}
for _name, _ufunc in _BINARY.items():
    setattr(ndarray, f"__{_name}__", _operator(_ufunc))
    setattr(ndarray, f"__r{_name}__", _operator(_ufunc, reflected=True))
    if _name != "matmul":
        setattr(ndarray, f"__i{_name}__", _operator(_ufunc, inplace=True))

ndarray.__module__ = "cupy"


REDUCTIONS = tuple(_reductions.PARAMETERS)
for _name in REDUCTIONS:  # each a method returning a 0-d (or reduced) device array
    setattr(ndarray, _name, _reduction(_name))


def _pointer_type() -> Any:
    """The type of an ndarray's ``data`` (a cupy.cuda.MemoryPointer whose ``ptr`` is read
    when it is made), imported at the first ``.data``: cuda/ imports this module."""
    global _POINTER
    if _POINTER is None:
        from .cuda.memory import _ArrayPointer
        _POINTER = _ArrayPointer
    return _POINTER


_POINTER: Any = None
_new = object.__new__
