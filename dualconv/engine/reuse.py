"""Which unpickled twins a worker may use again, and how they are set back.

A training step's forward call to a worker packs to the same bytes step after step
(arena.py: no number of an array is in the pickle), so the worker can skip unpickling
the twins again (workers.py, ``arguments_reusable``): unpickling a model's layers each
step costs the worker as much as a few of its layers' kernels. Reusing them must give
what a fresh unpickle gives. The same bytes make the same objects, except for what the
last call changed in them in place, and except where unpickling runs the class's own
code (a ``__setstate__`` may read the arrays' values). So a twin is reusable only where:

- its class is made and pickled the default way (no ``__new__``, ``__reduce__``,
  ``__getstate__``, ``__setstate__`` or ``__slots__`` of its own, no copyreg reducer);
- every attribute holds a value a call cannot change in place: None, a number, a
  string or a dtype without attributes of its own, a class, function or ufunc (pickled
  by name: the same object either way), a tuple or namedtuple of such, or a NumPy array
  of numbers (every call's pack fills it again in the shared region); or a dict of those
  (set back as a copy of its unpickled entries, one copy for every name and twin that
  shared it); or ``_seen``, the layer's cache of the input checks passed (a cache: it
  changes no result).

``remember(twins)`` keeps the states of freshly unpickled twins (False: not reusable);
``set_back(twins)`` gives remembered twins those states again before a reused call.
"""
from __future__ import annotations

import copyreg
import types
from typing import Any

import numpy as np

_VALUES = (bool, int, float, complex, str, bytes)  # exactly these: a subclass may add slots
_BY_NAME = (type, types.FunctionType, types.BuiltinFunctionType, np.ufunc)  # pickled as references
_DEFAULT_GETSTATE = getattr(object, "__getstate__", None)  # Python 3.11 on; None before
CHECK_CACHE = "_seen"  # Layer's cache of the input checks passed (layers/base.py)

State = tuple[dict[str, Any], tuple[str, ...]]  # a twin's attributes as unpickled, and which are dicts
_remembered: tuple[Any, list[list[State]]] | None = None  # (twins, their states)


def remember(twins: list[list[Any]]) -> bool:
    """Keep the states of twins just unpickled, for set_back; False (and nothing kept)
    where one of them is not reusable (the module docstring)."""
    global _remembered
    copies: dict[int, dict[str, Any]] = {}  # one copy per dict, however many names or twins share it
    states = [[_state(layer, copies) for layer in part_layers] for part_layers in twins]
    reusable = all(state is not None for part_states in states for state in part_states)
    _remembered = (twins, states) if reusable else None
    return reusable


def reusable(twins: list[list[Any]]) -> bool:
    """Whether remember() would keep these twins (the module docstring's rules), decided
    without copying their dicts."""
    return all(_state(layer, None) is not None for part_layers in twins for layer in part_layers)


def set_back(twins: list[list[Any]]) -> None:
    """Give twins that remember() kept the attributes they had when unpickled (their dicts
    as copies of the unpickled entries); other twins are left as they are."""
    if _remembered is None or _remembered[0] is not twins:
        return
    copies: dict[int, dict[str, Any]] = {}
    for part_layers, part_states in zip(twins, _remembered[1]):
        for layer, (state, dicts) in zip(part_layers, part_states):
            attributes = vars(layer)
            attributes.clear()
            attributes.update(state)
            for name in dicts:
                kept = state[name]
                attributes[name] = copies.setdefault(id(kept), dict(kept))


def made_the_default_way(cls: type) -> bool:
    """Whether instances of cls are made, pickled and copied the default way: no
    ``__new__``, ``__reduce__``, ``__reduce_ex__``, ``__getstate__``, ``__setstate__``,
    ``__copy__`` or ``__slots__`` of its own, no copyreg reducer (its state is its __dict__)."""
    return not (cls.__new__ is not object.__new__ or cls.__reduce_ex__ is not object.__reduce_ex__
                or cls.__reduce__ is not object.__reduce__
                or getattr(cls, "__getstate__", None) is not _DEFAULT_GETSTATE
                or hasattr(cls, "__setstate__") or hasattr(cls, "__copy__")
                or cls in copyreg.dispatch_table or any("__slots__" in vars(base) for base in cls.__mro__))


def _state(layer: Any, copies: dict[int, dict[str, Any]] | None) -> State | None:
    """The layer's attributes, each dict copied (``copies``: the copy of each dict seen so
    far, by id; None: the dicts themselves, for a caller that only asks whether the layer
    is reusable), and the names of the dicts; None where it is not reusable."""
    cls = type(layer)
    if not made_the_default_way(cls):
        return None
    try:
        attributes = vars(layer)
    except TypeError:  # no __dict__
        return None
    state: dict[str, Any] = {}
    for name, value in attributes.items():
        if name == CHECK_CACHE or _unchangeable(value):
            state[name] = value
        elif type(value) is dict and all(_unchangeable(entry) for entry in value.values()):
            state[name] = value if copies is None else copies.setdefault(id(value), dict(value))
        else:
            return None
    return state, tuple(name for name, value in state.items() if type(value) is dict)


def _unchangeable(value: Any) -> bool:
    """Whether a call cannot change ``value`` in place without the next pack undoing it."""
    if type(value) is np.ndarray:
        return not value.dtype.hasobject
    if isinstance(value, _BY_NAME):
        return True
    if hasattr(value, "__dict__"):  # a subclass's instance that takes attributes
        return False
    if type(value) is tuple or isinstance(value, tuple) and hasattr(value, "_fields"):
        return all(_unchangeable(item) for item in value)
    if isinstance(value, np.dtype):  # a structured dtype's field names can be set in place
        return value.names is None
    return value is None or type(value) in _VALUES or isinstance(value, np.generic)
