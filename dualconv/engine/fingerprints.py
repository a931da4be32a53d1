"""What code a worker runs, as a fingerprint: a worker forked before a class or function
was redefined (a notebook cell run again, importlib.reload, a patched method) runs the
old one, so ready_workers (workers.py) forks a new one when the caller's fingerprint
differs from the worker's. Likewise for the settings the kernels read from the
environment at each call (environment_fingerprint).
"""
from __future__ import annotations

import os
import sys
import time
import types

CODE_CHECK_SECONDS = 0.5
"""How often, at most, ready_workers compares the caller's code with its workers'
(code_fingerprint walks every dualconv module: too slow for every call)."""

WORKER_ENVIRONMENT = ("DUALCONV_NATIVE",)
"""Environment settings the kernels read at each call (dualconv/kernels/native.py's switch
of the compiled CPU kernels): a worker keeps the environment it was forked with, so one
forked under other values would run other kernels than the caller."""

_code_checked_at = float("-inf")


def environment_fingerprint() -> tuple[str | None, ...]:
    """The values of WORKER_ENVIRONMENT now (None where unset)."""
    return tuple(os.environ.get(name) for name in WORKER_ENVIRONMENT)


def code_if_due(now_anyway: bool) -> int | None:
    """code_fingerprint(), if asked or CODE_CHECK_SECONDS have passed since the last; else None."""
    global _code_checked_at
    now = time.monotonic()
    if not now_anyway and now - _code_checked_at < CODE_CHECK_SECONDS:
        return None
    _code_checked_at = now
    return code_fingerprint()


def code_fingerprint() -> int:
    """A fingerprint of the code a worker runs: the classes and functions bound in
    dualconv's modules and in __main__, and what the classes defined there hold. It
    changes when one is redefined (a cell run again, importlib.reload, a patched method);
    other values (a script's variables, a module's settings) are not part of it."""
    parts = []
    for name, module in list(sys.modules.items()):
        if name == "__main__" or name == "dualconv" or name.startswith("dualconv."):
            code = [value for value in list(vars(module).values()) if isinstance(value, _CODE)]
            parts.append(tuple(map(id, code)))
            parts.extend(class_fingerprint(value) for value in code
                         if isinstance(value, type) and value.__module__ == name)
    return hash(tuple(parts))


def class_fingerprint(cls: type) -> int:
    """The class and the code it holds (its functions, static and class methods,
    properties), not its other values: a class-level counter changes no fingerprint."""
    return hash((id(cls), *(id(value) for value in vars(cls).values() if isinstance(value, _METHODS))))


_CODE = (type, types.FunctionType)
_METHODS = (types.FunctionType, staticmethod, classmethod, property)
