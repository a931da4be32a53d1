"""Batch normalization (Ioffe & Szegedy 2015) with PyTorch's semantics.

Training mode normalizes each channel with the statistics of the batch (mean
and biased variance over every axis but the channel axis, 1) and updates the
running statistics: running = (1 - momentum) * running + momentum * batch,
with the unbiased variance (n / (n - 1) times the biased one, n values per
channel). Eval mode normalizes with the running statistics. Then, with
``affine``, y = weight * x_hat + bias per channel.

The running statistics are buffers, not parameters: saved, loaded and moved
with the model, never updated by an optimizer. Elementwise work runs in the
input's storage order (storage_order.py), so the output and the input gradient
keep the input's layout (batch-last after a convolution) on either backend.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..backend import get_array_module
from .base import Layer
from .storage_order import from_storage, storage_axes, to_storage


def _in_order(axes: tuple[int, ...], f: Callable[..., Any], *operands: Any) -> Any:
    """f on the operands (arrays of one rank, or scalars) viewed in the storage order ``axes``,
    returned in the caller's axis order: one elementwise pass, laid out as that order says."""
    return from_storage(f(*(to_storage(o, axes) if getattr(o, "ndim", 0) == len(axes) else o
                            for o in operands)), axes)


class _BatchNorm(Layer):
    """The shared computation; subclasses fix the accepted input ranks."""

    ndims: tuple[int, ...] = ()
    layout = ""

    @property
    def couples_samples(self) -> bool:  # type: ignore[override]
        return self.training  # batch statistics in training; running ones in eval

    def __init__(self, num_features: int | None = None, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True) -> None:
        super().__init__()
        if num_features is not None and (int(num_features) != num_features or int(num_features) < 1):
            raise ValueError(f"{self.name}: num_features must be a positive int or None, got {num_features!r}")
        if not float(eps) > 0:
            raise ValueError(f"{self.name}: eps must be positive, got {eps!r}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{self.name}: momentum must be in [0, 1], got {momentum!r}")
        self.num_features = None if num_features is None else int(num_features)
        self.eps, self.momentum, self.affine = float(eps), float(momentum), bool(affine)
        if self.num_features is not None:  # parameters at once, for a shape this layer accepts
            self.build((2, self.num_features) + (1,) * (min(self.ndims) - 2))

    def _create_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        self.num_features = int(input_shape[1])
        c = self.num_features
        if self.affine:
            self._set_param("weight", np.ones(c))
            self._set_param("bias", np.zeros(c))
        self._set_buffer("running_mean", np.zeros(c))
        self._set_buffer("running_var", np.ones(c))

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        if x.ndim not in self.ndims:
            raise ValueError(f"{self.name}: expected a {' or '.join(f'{d}-D' for d in self.ndims)} input "
                             f"{self.layout}, got shape {tuple(x.shape)}")
        if self.num_features is not None and x.shape[1] != self.num_features:
            raise ValueError(f"{self.name}: expected {self.num_features} channels (axis 1), got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)})")

    def forward(self, x: Any) -> Any:
        """As Layer.forward, but first refuses a training batch with one value per channel.

        That check belongs to the batch, not to the shape a model is built for
        (``build((1, ...))`` is fine), so it is made here, before anything changes.
        """
        if self.training and getattr(x, "ndim", 0) in self.ndims and x.size // max(x.shape[1], 1) < 2:
            raise ValueError(f"{self.name}: training mode needs more than one value per channel to compute "
                             f"batch statistics, got input shape {tuple(x.shape)}; use a batch of at least "
                             f"2 or call .eval()")
        return super().forward(x)

    def _channel_shape(self, x: Any) -> tuple[int, ...]:
        """(1, C, 1, ...): per-channel vectors broadcast against x."""
        return (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def _forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        axes = tuple(a for a in range(x.ndim) if a != 1)
        shape = self._channel_shape(x)
        order = storage_axes(x)
        if self.training:
            mean = x.mean(axis=axes, keepdims=True)
            centered = _in_order(order, lambda a, m: a - m, x, mean)
            var = _in_order(order, lambda c: c * c, centered).mean(axis=axes, keepdims=True)
            self._update_running(mean.reshape(-1), var.reshape(-1), x.size // x.shape[1])
        else:
            mean = self.buffers["running_mean"].astype(x.dtype).reshape(shape)
            var = self.buffers["running_var"].astype(x.dtype).reshape(shape)
            centered = _in_order(order, lambda a, m: a - m, x, mean)
        inv_std = 1 / xp.sqrt(var + x.dtype.type(self.eps))
        x_hat = _in_order(order, lambda c, s: c * s, centered, inv_std)
        self._cache = (x_hat, inv_std, axes, self.training, order)
        if not self.affine:
            return x_hat
        return _in_order(order, lambda h, w, b: h * w + b, x_hat, self.params["weight"].reshape(shape),
                         self.params["bias"].reshape(shape))

    def _update_running(self, mean: Any, var: Any, n: int) -> None:
        xp, m = get_array_module(mean), self.momentum
        for key, batch in (("running_mean", mean), ("running_var", var * (n / (n - 1)))):
            running = self.buffers[key]  # updated in place: a captured step writes where it read
            xp.add((1 - m) * running, (m * batch).astype(running.dtype), out=running)

    def _backward(self, gy: Any) -> Any:
        x_hat, inv_std, axes, training, order = self._cache
        self._check_grad_shape(gy, x_hat.shape)
        product = lambda a, b: a * b  # noqa: E731
        if self.affine:
            self.grads["weight"] = _in_order(order, product, gy, x_hat).sum(axis=axes)
            self.grads["bias"] = gy.sum(axis=axes)
        if not self._need_input_grad:
            return None
        weight = self.params["weight"].reshape(inv_std.shape) if self.affine else None
        gx_hat = _in_order(order, product, gy, weight) if self.affine else gy
        if not training:  # the running statistics are constants
            return _in_order(order, lambda g, s: g * s, gx_hat, inv_std)
        # x_hat depends on x through the batch mean and variance too:
        # gx = inv_std * (gx_hat - mean(gx_hat) - x_hat * mean(gx_hat * x_hat))
        mean_gx_hat = gx_hat.mean(axis=axes, keepdims=True)
        mean_gx_hat_x_hat = _in_order(order, product, gx_hat, x_hat).mean(axis=axes, keepdims=True)
        return _in_order(order, lambda s, g, m, h, mh: s * (g - m - h * mh),
                         inv_std, gx_hat, mean_gx_hat, x_hat, mean_gx_hat_x_hat)

    def get_config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine}


class BatchNorm2D(_BatchNorm):
    """Per-channel batch normalization of images.

    x: (N, C, H, W) -> y: same shape; statistics over N, H and W (n = N*H*W
    values per channel). weight, bias, running_mean, running_var: (C,).
    ``num_features=None`` (C) is inferred at the first forward.
    """

    ndims = (4,)
    layout = "(N, C, H, W)"


class BatchNorm1D(_BatchNorm):
    """Per-feature batch normalization of vectors (or sequences).

    x: (N, C) or (N, C, L) -> y: same shape; statistics over N (and L).
    weight, bias, running_mean, running_var: (C,). ``num_features=None`` (C)
    is inferred at the first forward. Training needs a batch of at least 2.
    """

    ndims = (2, 3)
    layout = "(N, C) or (N, C, L)"
