"""Dense: a fully connected layer, y = x @ W + b, W stored (in_features, out_features).

Forward:  y  = x @ W + b
Backward: gW = x.T @ gy,   gb = gy summed over the batch,   gx = gy @ W.T

Both calls are kernels (dualconv.kernels.dense_forward and dense_backward), so this
layer reads the same on NumPy and CuPy; the CPU twin computes the same sums in
cache-sized blocks, in the memory order the input is stored in (kernels/cpu_dense.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..init import get_initializer
from .base import Layer


class Dense(Layer):
    """x: (N, in_features) -> y: (N, out_features).

    weight: (in_features, out_features), bias: (out_features,).
    ``in_features=None`` is inferred at the first forward.
    """

    couples_samples = False

    def __init__(self, in_features: int | None, out_features: int, bias: bool = True,
                 weight_init: str = "glorot") -> None:
        super().__init__()
        if out_features is None or int(out_features) < 1:
            raise ValueError(f"Dense: out_features must be a positive int, got {out_features!r}")
        if in_features is not None and int(in_features) < 1:
            raise ValueError(f"Dense: in_features must be a positive int or None, got {in_features!r}")
        self.in_features = in_features
        self.out_features = int(out_features)
        self.use_bias = bool(bias)
        self.weight_init = weight_init
        get_initializer(weight_init)
        if in_features is not None:
            self.build((1, int(in_features)))

    def _create_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        self.in_features = int(input_shape[1])
        shape = (self.in_features, self.out_features)
        self._set_param("weight", get_initializer(self.weight_init)(shape, rng))
        if self.use_bias:
            self._set_param("bias", np.zeros(self.out_features))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], self.out_features)

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        self._require_ndim(x, 2, "(N, features); put a Flatten() before Dense")
        if self.in_features is not None and x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense: expected {self.in_features} input features, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})")

    def _forward(self, x: Any) -> Any:
        self._cache = x
        return kernels.dense_forward(x, self.params["weight"], self.params.get("bias"))

    def _backward(self, gy: Any) -> Any:
        x = self._cache
        self._check_grad_shape(gy, (x.shape[0], self.out_features))
        gx, gw, gb = kernels.dense_backward(gy, x, self.params["weight"],
                                            need_gx=self._need_input_grad, need_gb=self.use_bias)
        self.grads["weight"] = gw
        if self.use_bias:
            self.grads["bias"] = gb
        return gx

    def get_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.use_bias, "weight_init": self.weight_init}
