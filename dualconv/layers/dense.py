"""Dense: a fully connected layer, y = x @ W + b, W stored (in_features, out_features)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..blocked_matmul import matmul_inner_blocks, matmul_row_blocks
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
        w = self.params["weight"]
        # y = x @ W; with many input features (weidman: 25,088) summed over them a
        # block at a time, each block's operands in the L2 cache (blocked_matmul.py):
        # weidman's forward at batch 64 took 0.93 ms in one call, 0.47 ms blocked
        if isinstance(x, np.ndarray) and x.flags.f_contiguous and not x.flags.c_contiguous:
            # on the CPU, x stored feature-major (Flatten of batch-last images): y.T =
            # W.T @ x.T, the same products, each operand's blocks read along its storage
            # order (weidman at 32 images, one core: 0.25 -> 0.19 ms); y, a few numbers a
            # sample, is copied to rows (the loss and this backward are faster on them)
            y = np.ascontiguousarray(matmul_inner_blocks(w.T, x.T).T)
        else:
            y = matmul_inner_blocks(x, w)
        if self.use_bias:
            y += self.params["bias"]
        return y

    def _backward(self, gy: Any) -> Any:
        x = self._cache
        self._check_grad_shape(gy, (x.shape[0], self.out_features))
        # gW = x.T @ gy, a block of input features (rows) at a time: the same dot
        # products (weidman at batch 64: 0.74 ms in one call, 0.46 ms blocked)
        self.grads["weight"] = matmul_row_blocks(x.T, gy)
        if self.use_bias:
            self.grads["bias"] = gy.sum(axis=0)
        if not self._need_input_grad:
            return None
        w = self.params["weight"]
        if x.flags.f_contiguous and not x.flags.c_contiguous:
            # x is stored feature-major, as Flatten leaves batch-last images: computing
            # gx.T = w @ gy.T stores gx the same way, so the layers below (elementwise
            # gradients, the pooling kernels) read it without a transposing copy.
            return (w @ gy.T).T
        return gy @ w.T

    def get_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.use_bias, "weight_init": self.weight_init}
