"""The input checks of the list updates (the ``*_many`` kernels: every parameter of a
model in one call), run once per signature at the dispatch point, as checks.py does for
the others: every role a tuple of arrays, one per parameter (None only for vs and v_lasts,
without momentum), all of one array type (one backend), then the one-array kernel's check
on every parameter, its message prefixed with the parameter's index.
"""
from __future__ import annotations

from typing import Any, Callable

from . import checks


OPTIONAL = ("vs", "v_lasts")
"""The roles that may be None: SGD's velocities and their last-good copies, without momentum."""


def _each(roles: dict[str, Any], check: Callable[..., None], numbers: tuple[Any, ...],
          who: str) -> None:
    """check(one array per role, *numbers) for every parameter k, its message prefixed; every
    role a tuple of ws's length (None only where OPTIONAL), every array on ws[0]'s backend."""
    for name, arrays in roles.items():
        if arrays is None and name in OPTIONAL:
            continue
        if type(arrays) is not tuple:
            raise TypeError(f"{who}: {name} must be a tuple of arrays, one per parameter, "
                            f"got {type(arrays).__name__}")
        if len(arrays) != len(roles["ws"]):
            raise ValueError(f"{who}: {name} holds {len(arrays)} arrays but ws holds "
                             f"{len(roles['ws'])}")
    if not roles["ws"]:
        return
    backend = type(roles["ws"][0])
    for name, arrays in roles.items():
        for k, a in enumerate(arrays or ()):
            if type(a) is not backend:
                raise TypeError(f"{who}: {name}[{k}] is a {type(a).__module__}.{type(a).__name__} "
                                f"but ws[0] is a {backend.__module__}.{backend.__name__}; one "
                                f"call updates arrays of one backend")
    for k in range(len(roles["ws"])):
        try:
            check(*(None if a is None else a[k] for a in roles.values()), *numbers)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{who}: parameter {k}: {error}") from None


def _sgd_many_values(ws: Any, gs: Any, vs: Any, *rest: Any) -> None:
    if vs is None and rest[1] != 0:  # rest: lr, momentum, ...
        raise ValueError("sgd_update_many: momentum needs velocity arrays vs")


def sgd_update_many(ws: Any, gs: Any, vs: Any, lr: float, momentum: float, weight_decay: float,
                    nesterov: bool) -> None:
    numbers = (lr, momentum, weight_decay, nesterov)
    _sgd_many_values(ws, gs, vs, *numbers)
    _each(dict(ws=ws, gs=gs, vs=vs), checks.sgd_update, numbers, "sgd_update_many")


def _adam_many_values(ws: Any, gs: Any, ms: Any, vs: Any, lr: float, b1: float, b2: float,
                      eps: float, weight_decay: float, step: int) -> None:
    if int(step) < 1:
        raise ValueError(f"adam_update_many: step counts from 1, got {step}")


def adam_update_many(ws: Any, gs: Any, ms: Any, vs: Any, lr: float, b1: float, b2: float,
                     eps: float, weight_decay: float, step: int) -> None:
    numbers = (lr, b1, b2, eps, weight_decay, step)
    _adam_many_values(ws, gs, ms, vs, *numbers)
    _each(dict(ws=ws, gs=gs, ms=ms, vs=vs), checks.adam_update, numbers, "adam_update_many")


def _sgd_guarded_many_values(ws: Any, gs: Any, vs: Any, w_lasts: Any, v_lasts: Any, verdict: Any,
                             code: int, lr: float, momentum: float, *rest: Any) -> None:
    if vs is None and momentum != 0:
        raise ValueError("sgd_update_guarded_many: momentum needs velocity arrays vs")
    checks._code(code, "sgd_update_guarded_many")


def sgd_update_guarded_many(ws: Any, gs: Any, vs: Any, w_lasts: Any, v_lasts: Any, verdict: Any,
                            code: int, lr: float, momentum: float, weight_decay: float,
                            nesterov: bool) -> None:
    who = "sgd_update_guarded_many"
    _sgd_guarded_many_values(ws, gs, vs, w_lasts, v_lasts, verdict, code, lr, momentum)
    checks._verdict(verdict, who)
    _each(dict(ws=ws, gs=gs, vs=vs, w_lasts=w_lasts, v_lasts=v_lasts),
          lambda w, g, v, w_last, v_last, *numbers: checks.sgd_update_guarded(
              w, g, v, w_last, v_last, verdict, code, *numbers),
          (lr, momentum, weight_decay, nesterov), who)


def _adam_guarded_many_values(ws: Any, gs: Any, ms: Any, vs: Any, w_lasts: Any, m_lasts: Any,
                              v_lasts: Any, verdict: Any, code: int, lr: float, b1: float,
                              b2: float, eps: float, weight_decay: float, step: int) -> None:
    if int(step) < 1:
        raise ValueError(f"adam_update_guarded_many: step counts from 1, got {step}")
    checks._code(code, "adam_update_guarded_many")


def adam_update_guarded_many(ws: Any, gs: Any, ms: Any, vs: Any, w_lasts: Any, m_lasts: Any,
                             v_lasts: Any, verdict: Any, code: int, lr: float, b1: float,
                             b2: float, eps: float, weight_decay: float, step: int) -> None:
    who = "adam_update_guarded_many"
    numbers = (lr, b1, b2, eps, weight_decay, step)
    _adam_guarded_many_values(ws, gs, ms, vs, w_lasts, m_lasts, v_lasts, verdict, code, *numbers)
    checks._verdict(verdict, who)
    _each(dict(ws=ws, gs=gs, ms=ms, vs=vs, w_lasts=w_lasts, m_lasts=m_lasts, v_lasts=v_lasts),
          lambda w, g, m, v, w_last, m_last, v_last, *numbers: checks.adam_update_guarded(
              w, g, m, v, w_last, m_last, v_last, verdict, code, *numbers),
          numbers, who)


ROLES = {
    "sgd_update_many": ("ws", "gs", "vs"),
    "adam_update_many": ("ws", "gs", "ms", "vs"),
    "sgd_update_guarded_many": ("ws", "gs", "vs", "w_lasts", "v_lasts"),
    "adam_update_guarded_many": ("ws", "gs", "ms", "vs", "w_lasts", "m_lasts", "v_lasts"),
}
"""Each list kernel's roles: its first arguments, a tuple of arrays each (one per parameter)."""

_VALUES = {"sgd_update_many": _sgd_many_values, "adam_update_many": _adam_many_values,
           "sgd_update_guarded_many": _sgd_guarded_many_values,
           "adam_update_guarded_many": _adam_guarded_many_values}

PER_CALL: dict[str, tuple[tuple[str, ...], Callable[..., None]]] = {
    kernel: (checks.PER_CALL[kernel.removesuffix("_many")][0], values)
    for kernel, values in _VALUES.items()}
"""As checks.PER_CALL: kernel -> (its per-call parameters, the one-array kernel's, and the
check of their values)."""
