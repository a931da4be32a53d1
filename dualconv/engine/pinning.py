"""Which cores the engine's processes run on: the caller held on its first core while a
call's workers have the others, each worker on a core of its own (workers.py)."""
from __future__ import annotations

import os
from typing import Any


def nth_core(index: int) -> int | None:
    """The index-th core this process may use (0: the caller's), None if there are not that many."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[index] if index < len(cores) else None


class on_first_core:
    """Holds the calling thread on the first core it may use while the workers have the
    others, then gives back the cores it had; with ``wanted`` False, or where a sandbox
    refuses, leaves it alone."""

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted

    def __enter__(self) -> None:
        self.mask = os.sched_getaffinity(0) if self.wanted else None
        if self.mask is not None and not pin({min(self.mask)}):
            self.mask = None

    def __exit__(self, *exc: Any) -> None:
        if self.mask is not None:
            pin(self.mask)


def pin(cores: set[int]) -> bool:
    """Put the calling thread on ``cores``; False where that is not allowed."""
    try:
        os.sched_setaffinity(0, cores)
        return True
    except OSError:
        return False
