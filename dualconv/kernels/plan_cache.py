"""Plans made once per call signature, then bound to each call's arrays: the GPU's host path.

A plan (cuda_plans.py) reads only its arrays' shapes, strides and dtypes, a window and
a few ints, and passes on the call's per-step numbers (a learning rate, a step code, a
key). So everything in its ``Launch`` except the arrays and what those numbers become
is the same for every call with the same signature: the kernel's name, grid and block,
the index width, the magic numbers, the memory orders and the output buffers' shapes.
``PlanCache`` makes that once per signature (a ``Bound`` launch) and binds it to each
call: the call's arrays in their slots, fresh output buffers, and the per-call tail.

The cache key is the call's signature (signatures.py: per array its type, shape,
strides and dtype, the value of anything else), leaving out the parameters the plan
declares per-call (``per_call``). Binding is exact only when a plan keeps three rules,
checked when a signature is first seen (a launch that breaks one runs uncached):

* every array among the Launch's arguments (as it is, or as an ``Input``) is one of the
  call's arguments, passed at exactly one position (so it is found again by position);
* the per-call parameters change only the Launch's last arguments, which the plan's
  ``tail`` function makes from the call's arguments;
* everything else is a function of the signature (plans read no array's values).

Output buffers are allocated on every call, never kept per plan: each output is
returned to a caller that may hold it across steps (a layer's saved columns, a
model's output), so a buffer reused by the next call could overwrite it.
"""
from __future__ import annotations

import inspect
from operator import itemgetter
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from .launch import Input, Launch, Output, execute
from .signatures import PLAIN, exact, keyer, picker

Plan = TypeVar("Plan", bound=Callable[..., Launch])
Device = Callable[[], Any]
"""device() -> the current device (the key of its compiled kernels)."""
Functions = Mapping[tuple[Any, str], Callable[[tuple[int, int, int], tuple[int, int, int],
                                              tuple[Any, ...]], None]]
"""functions[device(), name](grid, block, arguments) runs name<<<grid, block>>>(*arguments)
on the current device (a mapping that finds a missing kernel itself: cuda.py's)."""

ENTRIES = 4096
"""Signatures kept per plan before the cache starts afresh (a model has a few shapes)."""


def per_call(*names: str, tail: Callable[..., tuple[Any, ...]]) -> Callable[[Plan], Plan]:
    """Declare a plan's parameters ``names`` as per-call numbers, left out of the cache key.

    ``tail(*the plan's arguments)`` returns the Launch arguments those numbers decide,
    which must be the Launch's last ones (the kernels take them last). Without this
    declaration every non-array argument is part of the key: correct, but a number that
    changes every step (Adam's step) would make a new plan every step.
    """
    def mark(plan: Plan) -> Plan:
        plan.per_call = (names, tail)  # type: ignore[attr-defined]
        return plan
    return mark


class Bound:
    """One signature's launch, ready to bind to a call with that signature.

    Launch arguments are picked from a pool: the call's arguments, then one fresh buffer
    per output, then the launch's fixed scalars, then the inputs read in another memory
    order (a C-contiguous view, or a copy when the view is not C-contiguous; an input
    already C-contiguous in its own order is passed as it is). ``tail`` makes the
    per-call arguments that follow them."""

    __slots__ = ("name", "grid", "block", "slots", "shapes", "dtypes", "views",
                 "constants", "layouts", "pick", "tail", "in_place")

    def __init__(self, launch: Launch, args: Sequence[Any],
                 tail: Callable[..., tuple[Any, ...]] | None, n_tail: int) -> None:
        self.name, self.grid, self.block, self.tail = launch.name, launch.grid, launch.block, tail
        position = _positions(args)
        slots: list[tuple[str, Any, Any]] = []  # (kind, what, its index among its kind)
        outputs: list[Output] = []
        constants: list[Any] = []
        layouts: list[tuple[int, tuple[int, ...], bool]] = []
        for a in launch.args[:len(launch.args) - n_tail]:
            if isinstance(a, Output):
                slots.append(("output", a, len(outputs)))
                outputs.append(a)
            elif isinstance(a, Input) and a.laid_out and a.axes == tuple(range(len(a.axes))):
                slots.append(("input", a.axes, position(a.array)))  # read as it is: no view
            elif isinstance(a, Input):
                slots.append(("layout", a.axes, len(layouts)))
                layouts.append((position(a.array), a.axes, not a.laid_out))
            elif isinstance(a, np.generic):
                slots.append(("constant", a, len(constants)))
                constants.append(a)
            else:
                slots.append(("argument", None, position(a)))
        base = {"argument": 0, "input": 0, "output": len(args),
                "constant": len(args) + len(outputs),
                "layout": len(args) + len(outputs) + len(constants)}
        self.slots = tuple(slots)
        self.constants, self.layouts = tuple(constants), tuple(layouts)
        self.views = tuple(o.view for o in outputs)
        order = [base[kind] + k for kind, _, k in slots]
        picked = itemgetter(*order) if order else lambda pool: ()
        self.pick = picked if len(order) != 1 else lambda pool: (picked(pool),)
        self.shapes = tuple(o.shape for o in outputs)
        self.dtypes = tuple(o.dtype for o in outputs)
        self.in_place = not outputs and not layouts  # the pool is the arguments, then the constants

    def run(self, xp: Any, device: Device, functions: Functions, *args: Any) -> Any:
        """Launch for ``args`` (a call of this signature): ``functions[device(), name](grid,
        block, arguments)`` with output buffers from ``xp.empty``. Returns None, the output, or a
        tuple of outputs, each seen through its Output's view (what the kernel's NumPy twin
        returns). Runs once per launch: no comprehension (each a frame), the buffers made
        by one ``map``; a launch with no output and no input read in another order (an
        update in place, the guard's flag) picks from the arguments and constants alone."""
        tail = self.tail
        if self.in_place:
            pool = args + self.constants
            functions[device(), self.name](
                self.grid, self.block,
                self.pick(pool) if tail is None else (*self.pick(pool), *tail(*args)))
            return None
        buffers = [*map(xp.empty, self.shapes, self.dtypes)]
        pool = [*args, *buffers, *self.constants]
        for k, axes, copy in self.layouts:
            view = pool[k].transpose(axes)
            pool.append(xp.ascontiguousarray(view) if copy else view)
        functions[device(), self.name](
            self.grid, self.block, self.pick(pool) if tail is None else (*self.pick(pool), *tail(*args)))
        views = self.views
        if len(buffers) == 1:
            return buffers[0] if views[0] is None else buffers[0].transpose(views[0])
        if not buffers:
            return None
        outputs = []
        for b, v in zip(buffers, views):
            outputs.append(b if v is None else b.transpose(v))
        return tuple(outputs)

    def launch(self, args: Sequence[Any]) -> Launch:
        """The Launch of this signature for ``args``, as the uncached plan returns it."""
        made = []
        for kind, what, k in self.slots:
            if kind == "input":
                made.append(Input(args[k], what))
            elif kind == "layout":
                made.append(Input(args[self.layouts[k][0]], what))
            elif kind == "argument":
                made.append(args[k])
            else:
                made.append(what)  # an Output, or a constant
        tail = self.tail(*args) if self.tail is not None else ()
        return Launch(self.name, self.grid, self.block, (*made, *tail))


class PlanCache:
    """``plan`` (a cuda_plans.plan_<kernel>) cached per call signature.

    ``run_on(args, xp, device, functions)`` runs the plan's launch for ``args``
    (Bound.run, or ``run_unbound`` where ``bound(args)`` is None) through a table of
    kernels, ``functions[device(), name]``;
    ``launch(args)`` is that launch, equal to ``plan(*args)``. A launch that breaks a
    rule of the module docstring runs as the plan made it, uncached."""

    def __init__(self, plan: Callable[..., Launch]) -> None:
        self.plan = plan
        names, self.tail = getattr(plan, "per_call", ((), None))
        params = list(inspect.signature(plan).parameters)
        self.keyed = picker(params, names)
        self.key = keyer(params, names)
        self.entries: dict[tuple[Any, ...], Bound] = {}

    def run_on(self, args: Sequence[Any], xp: Any, device: Device, functions: Functions) -> Any:
        bound = self.bound(args)
        if bound is None:
            return self.run_unbound(args, xp, device, functions)
        return bound.run(xp, device, functions, *args)

    def run_unbound(self, args: Sequence[Any], xp: Any, device: Device, functions: Functions) -> Any:
        """run_on for args whose launch does not bind (``bound(args)`` is None): the plan's
        launch as it made it, uncached."""
        return execute(self.plan(*args), xp, lambda launch, arguments: functions[
            device(), launch.name](launch.grid, launch.block, arguments))

    def bound(self, args: Sequence[Any]) -> Bound | None:
        """The Bound of args' signature (made on a miss); None when args have no signature
        to key on or the plan's launch for them breaks a rule of the module docstring."""
        try:
            return self.entries[self.key(args)]
        except KeyError:
            return self._make(args)
        except (TypeError, AttributeError, ValueError):  # unhashable, not an array, or not
            return None  # one argument per parameter: uncached

    def launch(self, args: Sequence[Any]) -> Launch:
        bound = self.bound(args)
        return self.plan(*args) if bound is None else bound.launch(args)

    def _make(self, args: Sequence[Any]) -> Bound | None:
        """The Bound kept for args' signature; None when the launch breaks a rule."""
        launch = self.plan(*args)
        tail = tuple(self.tail(*args)) if self.tail is not None else ()
        if tail and not _same_values(launch.args[len(launch.args) - len(tail):], tail):
            raise ValueError(f"{self.plan.__name__}: its per_call tail {tail} is not the end of "
                             f"its launch's arguments {launch.args[-len(tail):]}")
        keyed = args if self.keyed is None else self.keyed(args)
        if not exact(keyed):
            return None  # a NumPy scalar keyed as an array: its value would be left out
        try:
            bound = Bound(launch, args, self.tail, len(tail))
        except _Unbindable:
            return None
        if len(self.entries) >= ENTRIES:
            self.entries.clear()
        self.entries[self.key(args)] = bound
        return bound


class _Unbindable(Exception):
    """A launch array that is not exactly one of the call's arguments."""


def _positions(args: Sequence[Any]) -> Callable[[Any], int]:
    """array -> its one position among args; _Unbindable when it has none or several."""
    where: dict[int, list[int]] = {}
    for k, a in enumerate(args):
        if type(a) not in PLAIN and not isinstance(a, tuple):
            where.setdefault(id(a), []).append(k)

    def position(a: Any) -> int:
        found = where.get(id(a), [])
        if len(found) != 1:
            raise _Unbindable
        return found[0]
    return position


def _same_values(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Same length, and each pair of one type and equal (NaN equal to NaN)."""
    return len(a) == len(b) and all(type(x) is type(y) and (x == y or (x != x and y != y))
                                    for x, y in zip(a, b))
