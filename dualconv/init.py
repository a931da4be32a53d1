"""Weight initializers and the random generator they draw from.

Initial weights are always drawn in NumPy, float64, then cast and moved to
the model's backend, so a seed gives the same starting point on CPU and GPU.
"""
from __future__ import annotations

import numpy as np

_default_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Reseed the generator used by layers that are not built by a seeded Sequential."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def default_rng() -> np.random.Generator:
    """The module-wide generator (see manual_seed)."""
    return _default_rng


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Dense weight (in, out) or a Conv2D weight (out, in, kh, kw)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def glorot_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Glorot / Xavier normal: std = sqrt(2 / (fan_in + fan_out)) (the default for Dense and Conv2D)."""
    fan_in, fan_out = fans(shape)
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Glorot / Xavier uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape)


def he_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """He / Kaiming normal for ReLU nets: std = sqrt(2 / fan_in)."""
    fan_in, _ = fans(shape)
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


def he_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """He / Kaiming uniform: U(-a, a) with a = sqrt(6 / fan_in)."""
    fan_in, _ = fans(shape)
    a = np.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, size=shape)


INITIALIZERS = {
    "glorot": glorot_normal,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he": he_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
}


def get_initializer(name: str):
    """The initializer function called ``name`` (see INITIALIZERS)."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown initializer {name!r}; expected one of {sorted(INITIALIZERS)}") from None
