"""The signature of a kernel call, and what a kernel's calls remember per signature.

A step calls each kernel with the shapes, memory orders and dtypes of the step before;
only its arrays and a few per-call numbers (a learning rate, a step code, a key)
change. What a kernel's check decides (checks.py) and what its plan computes
(cuda_plans.py) depend on the call's signature alone, so both are made once per
signature: ``Remembered`` for the dispatch (the check's verdict and how the twin
runs), plan_cache.PlanCache for the plans.

A signature: per argument, an array's (type, shape, strides, dtype); the value of a
plain one (None, a bool, int, float or str, a NumPy scalar, a Window); a tuple's type
and its items' signatures. Parameters named per-call are left out; whoever leaves
them out checks or uses their values on every call.
"""
from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Any, Callable, Sequence

import numpy as np

from ..shapes import Window

PLAIN = frozenset({type(None), bool, int, float, str, Window, np.bool_, np.int8, np.int16,
                   np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.float16,
                   np.float32, np.float64})
"""Types of the arguments a signature holds by value."""

REMEMBERED = 4096
"""Signatures remembered per kernel before its memory starts afresh (shapes are few)."""


_ARRAY = attrgetter("shape", "strides", "dtype")
"""An array's (shape, strides, dtype), read without a Python frame."""


def signature(a: Any) -> Any:
    """One argument's signature (see the module docstring)."""
    if type(a) in PLAIN:
        return a
    if isinstance(a, tuple):  # a tuple of plain values (a shape) is its own items' signatures
        if PLAIN.issuperset(map(type, a)):
            return (type(a), *a)
        types = (*map(type, a),)
        if len(set(types)) == 1 and not issubclass(types[0], tuple):
            # a tuple of arrays of one type (a list kernel's role): no frame per array
            return (type(a), types[0], len(a), *map(_ARRAY, a))
        return (type(a), *map(signature, a))
    return (type(a), a.shape, a.strides, a.dtype)


_ITEM = ("{a} if type({a}) in PLAIN else (type({a}), {a}.shape, {a}.strides, {a}.dtype) "
         "if type({a}) is not tuple else signature({a}), ")
"""One argument's signature (signature(), written out) in a keyer's generated code."""


def keyer(params: Sequence[str], per_call: Sequence[str] = ()
          ) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The function args -> their key: a tuple of the signatures of the arguments but the
    per-call ones, in order (a dict key); ValueError when args are not one per parameter,
    TypeError (unhashable) or AttributeError (no shape) as signature() raises them, and
    TypeError when per_call names an unknown parameter.

    It runs once per kernel call, so it is generated for the parameters: one Python
    function that unpacks args and writes out each kept argument's signature, with no
    loop, comprehension or pick of its own (the frames they cost would be most of it).
    Compiled under this file's name, so a profile charges it here."""
    picker(params, per_call)  # the check of per_call's names
    names = [f"a{k}" for k in range(len(params))]
    kept = "".join(_ITEM.format(a=a) for a, p in zip(names, params) if p not in per_call)
    source = (f"def key(args):\n    {', '.join(names)}, = args\n    return ({kept})\n")
    namespace: dict[str, Any] = {"PLAIN": PLAIN, "signature": signature}
    exec(compile(source, __file__, "exec"), namespace)
    return namespace["key"]


def exact(args: Sequence[Any]) -> bool:
    """Whether the key of args (keyer) holds all that can be read of args: False when an argument taken
    for an array is a NumPy scalar of a type outside PLAIN, whose value it leaves out."""
    return all(exact(a) if isinstance(a, tuple) else type(a) in PLAIN or not isinstance(a, np.generic)
               for a in args)


def picker(params: Sequence[str], per_call: Sequence[str]
           ) -> Callable[[Sequence[Any]], Sequence[Any]] | None:
    """The function that picks a call's arguments but the per-call ones (a tuple), or None
    when no parameter is per-call; TypeError when per_call names an unknown parameter."""
    unknown = set(per_call) - set(params)
    if unknown:
        raise TypeError(f"per-call parameters {sorted(unknown)} are not among {list(params)}")
    keyed = tuple(k for k, p in enumerate(params) if p not in per_call)
    if len(keyed) == len(params):
        return None
    pick = itemgetter(*keyed)
    return pick if len(keyed) > 1 else lambda args: (pick(args),)


class Remembered:
    """One kernel's calls, remembered per signature of their arguments but the per-call
    ones: ``runs[key]`` is how a call of that signature runs (``run(*args)``), once its
    check passed.

    key: a call's key (keyer: the signatures of its arguments but the per-call ones);
    pick: picks the arguments the key is made of (None: all of them); values: checks the
    per-call numbers, as the whole check does (None: there are none)."""

    __slots__ = ("key", "pick", "values", "runs")

    def __init__(self, params: Sequence[str], per_call: Sequence[str] = (),
                 values: Callable[..., None] | None = None) -> None:
        self.pick = picker(params, per_call)
        self.key = keyer(params, per_call)
        self.values = values
        self.runs: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def learn(self, args: Sequence[Any], run: Callable[..., Any]) -> None:
        """Remember ``run`` (called as ``run(*args)``) for args' signature (when the
        signature holds all of args)."""
        if exact(args if self.pick is None else self.pick(args)):
            if len(self.runs) >= REMEMBERED:
                self.runs.clear()
            self.runs[self.key(args)] = run
