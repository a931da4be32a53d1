"""Shape arithmetic shared by every layer and both kernel backends."""
from __future__ import annotations


def pair(value: int | tuple[int, int], name: str = "value") -> tuple[int, int]:
    """An int or a pair of ints -> a pair of ints (height, width)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not all(isinstance(v, int) for v in value):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return value, value


def get_conv_outsize(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Output length of a sliding window: floor((size + 2p - d(k-1) - 1) / s) + 1.

    May be below 1: callers check and raise with their own name.
    """
    return (size + 2 * p - d * (k - 1) - 1) // s + 1
