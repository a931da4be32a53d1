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

import itertools
import linecache
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


_GENERATED = itertools.count(1)


def generated(source: str, name: str, module_file: str, label: str, namespace: dict[str, Any]) -> Any:
    """The function ``name`` that ``source`` defines, compiled into ``namespace``: code that
    runs once per kernel call, written out per kernel or signature. Its file name is
    ``module_file<label #n>`` (n counts the sources made), and its lines are registered
    with linecache, so a traceback shows the generated lines; a profile charges it to
    that file (benchmarks/gpu_host_cost.py folds the label into the module)."""
    filename = f"{module_file}<{label} #{next(_GENERATED)}>"  # one name per source
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


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

_TYPED_ARRAY = attrgetter("__class__", "shape", "strides", "dtype")
"""An array's signature, (type, shape, strides, dtype), read without a Python frame."""

_LIST_ITEM = "None if {a} is None else (type({a}), *map(_TYPED_ARRAY, {a})), "
"""The signature of an argument that is a sequence of arrays or None (a list kernel's
role), in a keyer's generated code: its type, then each array's (type, shape, strides,
dtype), with no frame per array. An item that is not an array raises AttributeError (no
signature: the call is checked in full)."""

_KEY_NAMES = {"PLAIN": PLAIN, "signature": signature, "_TYPED_ARRAY": _TYPED_ARRAY}
"""What the items above read: the globals of a key's generated code."""


def _items(names: Sequence[str], params: Sequence[str], per_call: Sequence[str],
           lists: Sequence[str]) -> str:
    """The key's items in a keyer's generated code: each kept argument's signature."""
    return "".join((_LIST_ITEM if p in lists else _ITEM).format(a=a)
                   for a, p in zip(names, params) if p not in per_call)


def keyer(params: Sequence[str], per_call: Sequence[str] = (), lists: Sequence[str] = ()
          ) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The function args -> their key: a tuple of the signatures of the arguments but the
    per-call ones, in order (a dict key); ValueError when args are not one per parameter,
    TypeError (unhashable) or AttributeError (no shape) as signature() raises them, and
    TypeError when per_call names an unknown parameter. The parameters ``lists`` take a
    sequence of arrays or None (_LIST_ITEM).

    It runs once per kernel call, so it is generated for the parameters: one Python
    function that unpacks args and writes out each kept argument's signature, with no
    loop, comprehension or pick of its own (the frames they cost would be most of it).
    Compiled by generated(), so a profile charges it to this file."""
    picker(params, per_call)  # the check of per_call's names
    names = [f"a{k}" for k in range(len(params))]
    kept = _items(names, params, per_call, lists)
    source = (f"def key(args):\n    {', '.join(names)}, = args\n    return ({kept})\n")
    return generated(source, "key", __file__, f"key of ({', '.join(params)})", dict(_KEY_NAMES))


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

    key: a call's key (keyer: the signatures of its arguments but the per-call ones, the
    parameters ``lists`` taking sequences of arrays); pick: picks the arguments the key is
    made of (None: all of them); values: checks the per-call numbers, as the whole check
    does (None: there are none)."""

    __slots__ = ("params", "per_call", "lists", "list_positions", "key", "pick", "values", "runs")

    def __init__(self, params: Sequence[str], per_call: Sequence[str] = (),
                 values: Callable[..., None] | None = None, lists: Sequence[str] = ()) -> None:
        self.params, self.per_call, self.lists = tuple(params), tuple(per_call), tuple(lists)
        self.list_positions = tuple(k for k, p in enumerate(self.params) if p in self.lists)
        self.pick = picker(params, per_call)
        self.key = keyer(params, per_call, lists)
        self.values = values
        self.runs: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def learn(self, args: Sequence[Any], run: Callable[..., Any]) -> None:
        """Remember ``run`` (called as ``run(*args)``) for args' signature (when the
        signature holds all of args)."""
        if exact(args if self.pick is None else self.pick(args)) and not any(
                isinstance(a, np.generic) for k in self.list_positions if args[k] is not None
                for a in args[k]):  # a list's NumPy scalar: its value is not in the key
            if len(self.runs) >= REMEMBERED:
                self.runs.clear()
            self.runs[self.key(args)] = run

    def dispatcher(self, first: Callable[[tuple[Any, ...]], Any],
                   unkeyed: Callable[[tuple[Any, ...]], Any], kernel: str) -> Callable[..., Any]:
        """The function ``dispatch(*args)`` (one positional argument per parameter): a
        remembered signature runs as remembered, after ``values(*args)``; a new one returns
        ``first(args)``, and args with no signature (unhashable, not an array)
        ``unkeyed(args)``. It runs once per kernel call, so it is generated, like the
        keyer: the key written out inside it, one frame in all."""
        names = [f"a{k}" for k in range(len(self.params))]
        listed = ", ".join(names)
        kept = _items(names, self.params, self.per_call, self.lists)
        check = f"    values({listed})\n" if self.values is not None else ""
        source = (f"def dispatch({listed}):\n"
                  f"    try:\n"
                  f"        run = runs[({kept})]\n"
                  f"    except KeyError:\n"
                  f"        run = first\n"
                  f"    except (TypeError, AttributeError):\n"
                  f"        run = unkeyed\n"
                  f"    if run is first or run is unkeyed:  # outside the except: no chained KeyError\n"
                  f"        return run(({listed},))\n"
                  f"{check}"
                  f"    return run({listed})\n")
        namespace: dict[str, Any] = {**_KEY_NAMES, "runs": self.runs, "values": self.values,
                                     "first": first, "unkeyed": unkeyed}
        return generated(source, "dispatch", __file__, f"dispatch of {kernel}", namespace)
