"""Elementwise activations and Softmax, each with its hand-derived gradient.

The elementwise ones compute on their input in storage order (storage_order.py):
the output and the input gradient are laid out as the input and the output
gradient are (batch-last after a convolution), and a GPU walks them in order.
"""
from __future__ import annotations

from typing import Any

from ..backend import get_array_module
from .base import Layer
from .storage_order import from_storage, storage_axes, to_storage


def softmax(x: Any) -> Any:
    """exp(x - max) / sum(exp(x - max)) over the last axis, on x's backend."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class _Elementwise(Layer):
    """y = f(x) elementwise; backward multiplies by f'(x), computed from what forward kept.

    Subclasses give ``_apply(x)`` (f on a C-ordered view of the input; it fills
    ``_cache`` with views in that order) and ``_derivative()`` (f' in that order).
    y has x's layout; gx has gy's layout when gy is laid out as x."""

    couples_samples = False

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        if x.dtype.kind != "f":
            raise TypeError(f"{self.name}: expected a floating-point input, got {x.dtype}")

    def _forward(self, x: Any) -> Any:
        self._shape, self._axes = x.shape, storage_axes(x)
        return from_storage(self._apply(to_storage(x, self._axes)), self._axes)

    def _apply(self, x: Any) -> Any:
        raise NotImplementedError

    def _backward(self, gy: Any) -> Any:
        self._check_grad_shape(gy, self._shape)
        return from_storage(to_storage(gy, self._axes) * self._derivative(), self._axes)


class ReLU(_Elementwise):
    """y = max(x, 0)."""

    def _apply(self, x: Any) -> Any:
        y = get_array_module(x).maximum(x, 0)
        self._cache = (y,)
        return y

    def _derivative(self) -> Any:
        (y,) = self._cache
        return y > 0


class LeakyReLU(_Elementwise):
    """y = x for x > 0, alpha * x otherwise."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def _apply(self, x: Any) -> Any:
        xp = get_array_module(x)
        self._cache = (x,)
        return xp.where(x > 0, x, x * x.dtype.type(self.alpha))

    def _derivative(self) -> Any:
        (x,) = self._cache
        xp = get_array_module(x)
        return xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.alpha))

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class Tanh(_Elementwise):
    """y = tanh(x); the derivative is 1 - y^2."""

    def _apply(self, x: Any) -> Any:
        y = get_array_module(x).tanh(x)
        self._cache = (y,)
        return y

    def _derivative(self) -> Any:
        (y,) = self._cache
        d = y * y
        return get_array_module(y).subtract(1, d, out=d)  # 1 - y^2, in the one temporary


class HardTanh(_Elementwise):
    """y = clip(x, min_val, max_val); gradient 1 strictly inside, 0 outside."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        super().__init__()
        if not min_val < max_val:
            raise ValueError(f"HardTanh: min_val must be below max_val, got {min_val}, {max_val}")
        self.min_val, self.max_val = float(min_val), float(max_val)

    def _apply(self, x: Any) -> Any:
        self._cache = (x,)
        return get_array_module(x).clip(x, self.min_val, self.max_val)

    def _derivative(self) -> Any:
        (x,) = self._cache
        return (x > self.min_val) & (x < self.max_val)

    def get_config(self) -> dict[str, Any]:
        return {"min_val": self.min_val, "max_val": self.max_val}


class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)); the derivative is y (1 - y)."""

    def _apply(self, x: Any) -> Any:
        xp = get_array_module(x)
        y = xp.exp(-xp.logaddexp(0, -x)).astype(x.dtype, copy=False)
        self._cache = (y,)
        return y

    def _derivative(self) -> Any:
        (y,) = self._cache
        return y * (1 - y)


class Identity(_Elementwise):
    """y = x (the identity, a 'linear' activation)."""

    def _forward(self, x: Any) -> Any:
        self._cache = (x,)
        return x

    def _backward(self, gy: Any) -> Any:
        self._check_grad_shape(gy, self._cache[0].shape)
        return gy


class Softmax(_Elementwise):
    """y = exp(x - max) / sum(exp(x - max)) over the last axis.

    x: (N, C) -> y: (N, C). Backward: gx = y * (gy - sum(gy * y)). For
    training a classifier, prefer SoftmaxCrossEntropy on the logits (fused
    and stable).
    """

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        self._require_ndim(x, 2, "(N, classes)")

    def _forward(self, x: Any) -> Any:
        y = softmax(x)
        self._cache = (y,)
        return y

    def _backward(self, gy: Any) -> Any:
        (y,) = self._cache
        self._check_grad_shape(gy, y.shape)
        return y * (gy - (gy * y).sum(axis=1, keepdims=True))
