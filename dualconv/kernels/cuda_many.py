"""The CUDA twins of the list updates: every parameter of a model updated in one launch.

``sgd_update_many``, ``adam_update_many`` and their guarded forms take, per role (the
weights, the gradients, each optimizer state, each last-good copy), a tuple with one
array per parameter, as cpu_fused's twins do, and update them all in place. A step's
update then costs the host one launch (up to DC_LIST_TENSORS = 32 arrays of one dtype
per launch; more, or several dtypes, take one launch per group) instead of one per
parameter: on a GPU a small model's step is bound by the host's work per launch.

The arrays' addresses go into a ``DcTensorList`` (kernels/optimizers.cu) passed by
value: a one-element NumPy array of the struct's bytes, which CuPy copies into the
launch's parameters, so the addresses never need a host-to-device copy. Everything
else (the groups, each group's element counts, grid and kernel name, which gradients
need a C-contiguous copy) depends on the call's signature alone and is made once per
signature (``runner``); a call fills in the addresses and the per-call numbers.
Results are the same bits as the one-array kernels: each element goes through the
same device functions.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .checks_many import ROLES
from .cuda import get_function
from .cuda_plans import FLOAT_TYPES, _adam_tail, _sgd_tail
from .launch import BLOCK, blocks

TENSORS = 32
"""DC_LIST_TENSORS: the arrays of each role one launch takes."""

SLOTS = 7
"""DC_LIST_ROLES: the most roles a list kernel reads (guarded Adam's w, g, m, v and three
last-good copies)."""

WORDS = TENSORS + SLOTS * TENSORS + 1
"""The DcTensorList as 64-bit words: end[TENSORS], ptr[SLOTS][TENSORS], count."""

STRUCT = np.dtype((np.void, WORDS * 8))
"""The DcTensorList's bytes as one NumPy item: what CuPy passes by value."""

KERNELS = tuple(ROLES)
"""The list kernels this module launches (they have no plan in cuda_plans.py)."""


class _Group:
    """One launch of a list kernel: the parameters ``indices`` (at most TENSORS, of one
    dtype), the DcTensorList with their element counts filled in, where the addresses of
    the roles ``present`` go in it, grid and kernel."""

    __slots__ = ("indices", "whole", "words", "positions", "grid", "name", "first")

    def __init__(self, kernel: str, indices: Sequence[int], ws: Sequence[Any],
                 present: Sequence[int]) -> None:
        self.indices = tuple(indices)
        self.whole = self.indices == tuple(range(len(ws)))  # every parameter: no pick
        self.first = self.indices[0]
        sizes = [int(np.prod(ws[k].shape, dtype=np.int64)) for k in self.indices]
        self.words = np.zeros(WORDS, np.uint64)
        self.words[:len(sizes)] = np.cumsum(sizes, dtype=np.int64).astype(np.uint64)
        self.words[-1] = len(sizes)
        self.positions = np.array([TENSORS * (1 + role) + j for role in present
                                   for j in range(len(sizes))], np.intp)
        self.grid = (blocks(max(sum(sizes), 1)), 1, 1)
        self.name = f"{kernel}<{FLOAT_TYPES[np.dtype(ws[self.first].dtype)]}>"

    def arguments(self, roles: Sequence[Sequence[Any]]) -> np.ndarray:
        """The DcTensorList of this group's arrays in ``roles`` (the present roles, in order)."""
        words = self.words.copy()
        if self.whole:
            words[self.positions] = [a.data.ptr for arrays in roles for a in arrays]
        else:
            words[self.positions] = [arrays[k].data.ptr for arrays in roles for k in self.indices]
        return words.view(STRUCT)


def _groups(kernel: str, ws: Sequence[Any], present: Sequence[int]) -> tuple[_Group, ...]:
    """ws's parameters by dtype (in order of first appearance), TENSORS at a time."""
    by_dtype: dict[np.dtype, list[int]] = {}
    for k, w in enumerate(ws):
        by_dtype.setdefault(np.dtype(w.dtype), []).append(k)
    return tuple(_Group(kernel, indices[at:at + TENSORS], ws, present)
                 for indices in by_dtype.values() for at in range(0, len(indices), TENSORS))


class _Prepared:
    """What a list kernel's calls of one signature share: the groups, and which
    gradients must be laid out C-contiguous first (the kernel ignores strides)."""

    __slots__ = ("kernel", "roles", "present", "groups", "copied")

    def __init__(self, kernel: str, args: Sequence[Any]) -> None:
        self.kernel, self.roles = kernel, len(ROLES[kernel])
        self.present = tuple(r for r in range(self.roles) if args[r] is not None)
        ws, gs = args[0], args[1]
        if len(ws) == 0:
            self.groups, self.copied = (), ()
            return
        for role, arrays in zip(ROLES[kernel], args[:self.roles]):
            if role != "gs" and arrays is not None:
                for k, a in enumerate(arrays):
                    if not a.flags.c_contiguous:
                        raise ValueError(f"{kernel}: {role}[{k}] must be C-contiguous (it is "
                                         f"updated in place)")
        self.groups = _groups(kernel, ws, self.present)
        self.copied = tuple(k for k, g in enumerate(gs) if not g.flags.c_contiguous)

    def run(self, *args: Any) -> None:
        roles = [args[r] for r in self.present]
        if self.copied:
            import cupy

            gs = list(roles[1])
            for k in self.copied:
                gs[k] = cupy.ascontiguousarray(gs[k])
            roles[1] = gs
        rest = args[self.roles:]
        groups = self.groups
        if not all(len(set(map(id, arrays))) == len(arrays) for arrays in roles[:1] + roles[2:]):
            groups = self._one_by_one(args[0])  # an array updated twice: in turn, never at once
        for group in groups:
            arguments = _tail(self.kernel, args[0][group.first], rest)
            get_function(group.name)(group.grid, (BLOCK, 1, 1),
                                     (group.arguments(roles), *arguments))

    def _one_by_one(self, ws: Sequence[Any]) -> tuple[_Group, ...]:
        """One launch per parameter, in order: where one array is listed twice (a weight
        tied between layers), two threads of one launch would update it at once."""
        return tuple(_Group(self.kernel, (k,), ws, self.present) for k in range(len(ws)))


def _tail(kernel: str, w: Any, rest: Sequence[Any]) -> tuple[Any, ...]:
    """The kernel's arguments after the list, for a group whose first weight is ``w``:
    the per-call numbers in w's dtype (cuda_plans' tails), the guarded ones' verdict first
    and step code last."""
    if kernel == "sgd_update_many":
        return _sgd_tail(w, None, None, *rest)
    if kernel == "adam_update_many":
        return _adam_tail(w, None, None, None, *rest)
    verdict, code, numbers = rest[0], np.int32(rest[1]), rest[2:]
    if kernel == "sgd_update_guarded_many":
        return (verdict, *_sgd_tail(w, None, None, *numbers), code)
    return (verdict, *_adam_tail(w, None, None, None, *numbers), code)


def runner(kernel: str, args: tuple[Any, ...]) -> Callable[..., None]:
    """For the dispatch point: ``run(*arguments)`` for any call with args' signature."""
    return _Prepared(kernel, args).run


def sgd_update_many(ws: Sequence[Any], gs: Sequence[Any], vs: Sequence[Any] | None, lr: float,
                    momentum: float, weight_decay: float, nesterov: bool) -> None:
    """sgd_update on every (w, g, v); see cpu_fused.sgd_update_many."""
    _Prepared("sgd_update_many", (ws, gs, vs)).run(ws, gs, vs, lr, momentum, weight_decay,
                                                     nesterov)


def adam_update_many(ws: Sequence[Any], gs: Sequence[Any], ms: Sequence[Any], vs: Sequence[Any],
                     lr: float, b1: float, b2: float, eps: float, weight_decay: float,
                     step: int) -> None:
    """adam_update on every (w, g, m, v); see cpu_fused.adam_update_many."""
    _Prepared("adam_update_many", (ws, gs, ms, vs)).run(ws, gs, ms, vs, lr, b1, b2, eps,
                                                          weight_decay, step)


def sgd_update_guarded_many(ws: Sequence[Any], gs: Sequence[Any], vs: Sequence[Any] | None,
                            w_lasts: Sequence[Any], v_lasts: Sequence[Any] | None, verdict: Any,
                            code: int, lr: float, momentum: float, weight_decay: float,
                            nesterov: bool) -> None:
    """sgd_update_guarded on every parameter; see cpu_fused.sgd_update_guarded_many."""
    args = (ws, gs, vs, w_lasts, v_lasts, verdict, code, lr, momentum, weight_decay, nesterov)
    _Prepared("sgd_update_guarded_many", args).run(*args)


def adam_update_guarded_many(ws: Sequence[Any], gs: Sequence[Any], ms: Sequence[Any],
                             vs: Sequence[Any], w_lasts: Sequence[Any], m_lasts: Sequence[Any],
                             v_lasts: Sequence[Any], verdict: Any, code: int, lr: float,
                             b1: float, b2: float, eps: float, weight_decay: float,
                             step: int) -> None:
    """adam_update_guarded on every parameter; see cpu_fused.adam_update_guarded_many."""
    args = (ws, gs, ms, vs, w_lasts, m_lasts, v_lasts, verdict, code, lr, b1, b2, eps,
            weight_decay, step)
    _Prepared("adam_update_guarded_many", args).run(*args)

