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
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from .launch import Input, Launch, Output, execute
from .signatures import PLAIN, exact, generated, keyer, picker

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

    ``run(xp, device, functions, *args)`` launches for ``args`` (a call of this signature):
    ``functions[device(), name](grid, block, arguments)``, the arguments being the call's
    arrays in their slots, one fresh ``xp.empty`` buffer per output, the launch's fixed
    scalars, the inputs read in another memory order (a C-contiguous view, or a copy
    when the view is not C-contiguous; an input already C-contiguous in its own order is
    passed as it is), then what ``tail(*args)`` makes. It returns None, the output, or a
    tuple of outputs, each seen through its Output's view (what the kernel's NumPy twin
    returns). It runs once per launch, so it is generated for the signature: straight-line
    code with the slots written out (no pool, no pick, no loop; signatures.generated)."""

    __slots__ = ("name", "grid", "block", "slots", "layouts", "tail", "run")

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
        self.slots, self.layouts = tuple(slots), tuple(layouts)
        self.run = _runner(self, len(args), outputs, constants)

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


def _runner(bound: Bound, n_args: int, outputs: Sequence[Output],
            constants: Sequence[Any]) -> Callable[..., Any]:
    """Bound.run for ``bound``, written out for its slots: a0.. the call's arguments, b0..
    the output buffers, v0.. the inputs in another order, each run of constants one named
    tuple (unpacked in C, with no name to look up per constant)."""
    params = ", ".join(f"a{k}" for k in range(n_args))
    names: dict[str, Any] = {"NAME": bound.name, "GRID": bound.grid, "BLOCK": bound.block,
                             "TAIL": bound.tail}
    lines = [f"def run(xp, device, functions, {params}):"]
    for j, o in enumerate(outputs):
        names[f"SHAPE{j}"], names[f"DTYPE{j}"] = o.shape, o.dtype
        lines.append(f"    b{j} = xp.empty(SHAPE{j}, DTYPE{j})")
    for j, (k, axes, copy) in enumerate(bound.layouts):
        names[f"AXES{j}"] = axes
        view = f"a{k}.transpose(AXES{j})"
        lines.append(f"    v{j} = xp.ascontiguousarray({view})" if copy else f"    v{j} = {view}")
    prefix = {"argument": "a", "input": "a", "output": "b", "layout": "v"}
    arguments: list[str] = []
    for kind, _, k in bound.slots:
        if kind != "constant":
            arguments.append(f"{prefix[kind]}{k}")
        elif arguments and arguments[-1].startswith("*CONSTANTS"):  # a run of constants: one tuple
            names[arguments[-1][1:]] += (constants[k],)
        else:
            arguments.append(f"*CONSTANTS{len(arguments)}")
            names[arguments[-1][1:]] = (constants[k],)
    if bound.tail is not None:
        arguments.append(f"*TAIL({params})")
    listed = f"({', '.join(arguments)},)" if arguments else "()"
    lines.append(f"    functions[device(), NAME](GRID, BLOCK, {listed})")
    results = []
    for j, o in enumerate(outputs):
        names[f"VIEW{j}"] = o.view
        results.append(f"b{j}" if o.view is None else f"b{j}.transpose(VIEW{j})")
    if len(results) == 1:
        lines.append(f"    return {results[0]}")
    elif results:
        lines.append(f"    return ({', '.join(results)})")
    return generated("\n".join(lines) + "\n", "run", __file__, f"launch of {bound.name}", names)


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
