"""A training step's calls to a worker, sent again without pickling: the forward's twins, the backward's form.

Step after step, the forward call of a run of parts names the same objects: twins of
the same layers, holding the same parameter arrays, with the batch's new values. It
packs to the same bytes (arena.py), and the worker takes up the twins it unpickled
last time (reuse.py). Pickling those twins is the caller's largest cost around a
step's kernels, so the caller keeps the packed call (``Worker.start(..., keep=True)``)
and, while the layers hold what they held then, sends it again with the arrays alone
copied: ``start(worker, contents(layers), call)``.

"What they held then" is each layer's class and attributes, and each dict attribute's
entries: the same objects, or equal plain values (numbers, strings, tuples of them: a
layer rebinds its input's shape each forward). The attributes a twin sets for itself
(twin(): its cache, gradients and first sample) and the input checks' cache are left
out. Kept only for twins reuse.py would reuse (none holds a list, a set or another
object a layer could change in place without rebinding it); the arrays' shapes and
dtypes are checked at each copy.

A step's backward call (the pass's token, gy's parts, a flag) holds nothing but its form
and its arrays, so ``start_alike`` sends it again whenever its form is the kept one's.
"""
from __future__ import annotations

import weakref
from operator import is_
from typing import Any, Sequence

from . import reuse
from .arena import PLAIN, float_bits, form
from .workers import Call, Worker

_OWN = frozenset({"grads", "_cache", "first_sample", reuse.CHECK_CACHE})
"""Attributes left out of a layer's contents: set by twin() for each twin, or a cache."""


class _Sent:
    """The call a worker keeps: its packed form, the layers' contents when it was packed,
    its part ranges, and where the batch's part is among its arrays."""

    def __init__(self, packed: Any, contents: list[Any], ranges: Any, x_index: int) -> None:
        self.packed, self.contents, self.ranges, self.x_index = packed, contents, ranges, x_index


_sent: "weakref.WeakKeyDictionary[Worker, _Sent]" = weakref.WeakKeyDictionary()


def start(worker: Worker, held: list[Any] | None, call: Call) -> bool:
    """Start ``call`` (passes._forward_kept: twins, the batch's part, the ranges, the first
    sample) on ``worker``: its kept packing sent again when the layers hold what they held
    then (``held``, contents() of the layers the twins copy), else packed afresh (and
    kept where reuse.py allows). Worker.start's answer."""
    twins, x_part, ranges, _ = call[1]
    sent = _sent.get(worker)
    if (sent is not None and held is not None and worker.kept[0] is sent.packed
            and sent.ranges == ranges and _same(sent.contents, held)):
        arrays = list(sent.packed.arrays)
        arrays[sent.x_index] = x_part
        if worker.start_again(0, arrays):
            return True
    _sent.pop(worker, None)
    keep = held is not None and reuse.reusable(twins)
    if not worker.start(call, keep=keep):
        return False
    packed = worker.kept[0]
    if packed is not None:
        x_index = next((i for i, a in enumerate(packed.arrays) if a is x_part), None)
        if x_index is not None:
            packed.arrays[x_index] = None  # the batch is not held: each call gives its own part
            _sent[worker] = _Sent(packed, held, ranges, x_index)
    return True


def start_alike(worker: Worker, call: Call, slot: int) -> bool:
    """Start ``call`` on ``worker`` in call slot ``slot``: where the slot keeps a call of the
    same function and form (arena.form: the same containers and plain values, arrays of the
    same shapes and dtypes), that packing is sent again with the arrays alone copied (the
    bytes pickling would give); else it is packed afresh, and kept when it has a form. For
    calls whose every value is in their form, such as a backward call (the token as an
    array, gy's parts, a flag). Worker.start's answer."""
    function, args = call
    shaped = form(args)
    key = None if shaped is None else (function, shaped[0])
    kept = worker.kept[slot]
    if key is not None and kept is not None and kept.form == key and worker.start_again(slot, shaped[1]):
        return True
    if not worker.start(call, slot=slot, keep=key is not None):
        return False
    kept = worker.kept[slot]
    if kept is not None:
        kept.form = key
        kept.arrays = [None] * len(kept.arrays)  # each call brings its own: gy is not held
    return True


def contents(layers: Sequence[Any]) -> list[Any] | None:
    """Each layer's class and number of attributes, then its attributes' names and values (a
    dict's length, keys and values after it), but those in _OWN: what a forward call's
    twins pickle, but the arrays' values. None for a layer without a __dict__."""
    out: list[Any] = []
    for layer in layers:
        try:
            attributes = vars(layer)
        except TypeError:
            return None
        out += (type(layer), len(attributes))
        for name, value in attributes.items():
            if name not in _OWN:
                out += (name, value)
                if type(value) is dict:
                    out.append(len(value))
                    out += value
                    out += value.values()
    return out


def _same(old: list[Any], new: list[Any]) -> bool:
    """Whether two contents() lists hold the same objects, or equal plain values."""
    if len(old) != len(new):
        return False
    return all(map(is_, old, new)) or all(a is b or _equal_plain(a, b) for a, b in zip(old, new))


def _equal_plain(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(x is y or _equal_plain(x, y) for x, y in zip(a, b))
    if type(a) is float:
        return float_bits(a) == float_bits(b)
    return type(a) in PLAIN and a == b
