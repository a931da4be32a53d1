"""Losses: value = loss.forward(pred, target), gy = loss.backward().

gy is the gradient of the loss with respect to pred, the gy that the model's
backward takes.

Every loss is a mean over the batch, so its gradient carries a 1/N.
"""
from __future__ import annotations

from typing import Any

from . import kernels
from .backend import backend_of, get_array_module, to_backend


class Loss:
    """Base class: checks shapes and keeps what backward needs (the Trainer catches non-finite values).

    ``check_labels`` (default True): forward checks that integer labels are in range. The
    Trainer checks every label once up front and turns it off inside fit and evaluate.
    """

    def __init__(self) -> None:
        self._cache: Any = None
        self.check_labels = True

    def verify_labels(self) -> None:
        """Raise the label error that a forward on the GPU found on the device, if any.

        A loss with nothing checked on the device (every one but SoftmaxCrossEntropy,
        and any loss on NumPy, which checks at once) has none: this does nothing.
        """

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, pred: Any, target: Any) -> Any:
        return self.forward(pred, target)

    def forward(self, pred: Any, target: Any) -> Any:
        """Returns the loss as a 0-d array on pred's backend (float(...) reads it)."""
        if not hasattr(pred, "ndim"):
            raise TypeError(f"{self.name}: expected an array of predictions, got {type(pred).__name__}")
        target = to_backend(target, backend_of(pred))
        return self._forward(pred, target)

    def backward(self) -> Any:
        if self._cache is None:
            raise RuntimeError(f"{self.name}.backward called before forward")
        return self._backward()

    def _same_shape(self, pred: Any, target: Any) -> None:
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"{self.name}: predictions have shape {tuple(pred.shape)} but targets "
                             f"have shape {tuple(target.shape)}; they must match")


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused: stable by log-sum-exp.

    pred: logits (N, C); target: int labels (N,) in [0, C) or one-hot /
    probability rows (N, C). loss = mean_n(logsumexp(z_n) - sum_c t_nc z_nc);
    gy = (softmax(z) - t) / N, computed with the loss. Integer labels take the
    fused kernel (dualconv.kernels.softmax_cross_entropy: one launch on the GPU).

    Label range (``check_labels``): on NumPy, forward raises ValueError at once. On
    the GPU reading the labels back would cost a sync per call, so the check stays
    on the device: forward folds the labels' minimum and maximum into a running
    pair (device reductions, no host read), and a label out of range makes its
    row's loss NaN (the kernel reads no logit for it). ``verify_labels()`` reads
    the pair back and raises the same ValueError for every forward since its
    last call; Trainer.fit and Trainer.evaluate call it before they start, and a
    forward whose class count differs from the pending one's calls it first.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: tuple[Any, Any, int] | None = None  # device (min, max) of unverified labels, C

    def verify_labels(self) -> None:
        if self._pending is None:
            return
        low, high, classes = self._pending
        self._pending = None
        self._check_range(int(low), int(high), classes)

    def _check_range(self, low: int, high: int, classes: int) -> None:
        if low < 0 or high >= classes:
            raise ValueError(f"{self.name}: labels must be in [0, {classes}), got values from "
                             f"{low} to {high}")

    def _check_on_device(self, target: Any, classes: int) -> None:
        """Fold target's range into the pending pair, on the device (see the class docstring)."""
        xp = get_array_module(target)
        if self._pending is not None and self._pending[2] != classes:
            self.verify_labels()
        low, high = target.min(), target.max()
        if self._pending is not None:
            low, high = xp.minimum(low, self._pending[0]), xp.maximum(high, self._pending[1])
        self._pending = (low, high, classes)

    def _forward(self, pred: Any, target: Any) -> Any:
        xp = get_array_module(pred)
        if pred.ndim != 2:
            raise ValueError(f"{self.name}: expected logits of shape (N, classes), got {tuple(pred.shape)}")
        N, C = pred.shape
        if target.ndim == 1:
            if target.shape[0] != N:
                raise ValueError(f"{self.name}: got {target.shape[0]} labels for {N} predictions")
            if target.dtype.kind not in "iu":
                raise TypeError(f"{self.name}: 1-D targets must be integer class labels, got {target.dtype}")
            if self.check_labels and N:
                if backend_of(target) == "numpy":
                    self._check_range(int(target.min()), int(target.max()), C)
                else:
                    self._check_on_device(target, C)
            rows, gy = kernels.softmax_cross_entropy(pred, target)  # one launch on the GPU
            self._cache = gy
            return rows.mean()
        self._same_shape(pred, target)
        target = target.astype(pred.dtype, copy=False)
        shifted = pred - pred.max(axis=1, keepdims=True)
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_z
        self._cache = (xp.exp(log_p) - target) / pred.dtype.type(N)
        return -(target * log_p).sum() / pred.dtype.type(N)

    def _backward(self) -> Any:
        return self._cache


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy, mean over every element.

    pred: probabilities in (0, 1), or logits with ``from_logits=True`` (a
    fused sigmoid, stable for large |z|); target: same shape, values in [0, 1].
    """

    def __init__(self, from_logits: bool = False, eps: float = 1e-7) -> None:
        super().__init__()
        self.from_logits = bool(from_logits)
        self.eps = float(eps)

    def _forward(self, pred: Any, target: Any) -> Any:
        xp = get_array_module(pred)
        self._same_shape(pred, target)
        t = target.astype(pred.dtype, copy=False)
        if self.from_logits:
            # log(1 + e^z) - t z, computed without overflow
            losses = xp.logaddexp(0, pred) - t * pred
        else:
            p = xp.clip(pred, self.eps, 1 - self.eps)
            losses = -(t * xp.log(p) + (1 - t) * xp.log(1 - p))
        self._cache = (pred, t)
        return losses.mean()

    def _backward(self) -> Any:
        pred, t = self._cache
        xp = get_array_module(pred)
        n = pred.dtype.type(pred.size)
        if self.from_logits:
            sigmoid = xp.exp(-xp.logaddexp(0, -pred)).astype(pred.dtype, copy=False)
            return (sigmoid - t) / n
        p = xp.clip(pred, self.eps, 1 - self.eps)
        inside = (pred > self.eps) & (pred < 1 - self.eps)
        return (p - t) / (p * (1 - p)) / n * inside


class MeanSquaredError(Loss):
    """mean((pred - target)^2) over every element; gy = 2 (pred - target) / size."""

    def _forward(self, pred: Any, target: Any) -> Any:
        self._same_shape(pred, target)
        diff = pred - target.astype(pred.dtype, copy=False)
        self._cache = diff
        return (diff * diff).mean()

    def _backward(self) -> Any:
        diff = self._cache
        return 2 * diff / diff.dtype.type(diff.size)
