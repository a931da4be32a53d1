"""Flatten: (N, ...) -> (N, prod(...)), keeping the batch axis."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from .base import Layer


class Flatten(Layer):
    """x: (N, d1, d2, ...) -> y: (N, d1*d2*...)."""

    couples_samples = False

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], int(np.prod(input_shape[1:])))

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        if x.ndim < 2:
            raise ValueError(f"Flatten: expected an input with a batch axis and at least one more, "
                             f"got shape {tuple(x.shape)}")

    def _forward(self, x: Any) -> Any:
        self._cache = x.shape
        return kernels.flatten_batch(x)  # a view of batch-last activations, as the pools return them

    def _backward(self, gy: Any) -> Any:
        x_shape = self._cache
        self._check_grad_shape(gy, self._output_shape_of(x_shape))
        return gy.reshape(x_shape)
