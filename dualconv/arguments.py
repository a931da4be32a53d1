"""Checks of the integer arguments that the training and prediction methods share."""
from __future__ import annotations

import numbers
from typing import Any


def check_integer(who: str, name: str, value: Any, least: int) -> int:
    """``value`` as an int; a TypeError unless it is an integer (not a bool), a
    ValueError below ``least``, both naming ``who`` (e.g. "Trainer.fit") and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: {name} must be an integer, got {value!r}")
    if value < least:
        raise ValueError(f"{who}: {name} must be >= {least}, got {value!r}")
    return int(value)


def check_batch_size(who: str, batch_size: Any) -> int:
    """A mini-batch size: an integer >= 1 (see check_integer)."""
    return check_integer(who, "batch_size", batch_size, 1)
