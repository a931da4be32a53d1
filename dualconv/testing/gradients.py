"""Finite-difference gradient checks for layers and losses.

The layer contract checked here:

- ``layer.forward(x) -> y``;
- ``layer.backward(gy) -> gx``, valid after a forward of the same x;
- ``layer.params`` and ``layer.grads``: dicts with the same keys ("weight",
  "bias", ...) of live arrays, so writing into ``params[k]`` changes what the
  next forward computes, and ``grads[k]`` holds dL/d params[k] after backward.

A loss has ``value = loss.forward(pred, target)`` (a scalar) and
``dpred = loss.backward()``.

Use float64 inputs and parameters: with eps = 1e-6 a central difference in
float32 is rounding noise, so the checks refuse other dtypes. Layers with a
``training`` flag are checked in whatever mode they are in; the caller picks
it. Anything random in forward (dropout masks) must repeat exactly from call
to call, since forward runs 2 * (x.size + total parameter size) times more:
check such layers in eval mode, or make the randomness a fixed function of a
seed the caller resets. Arrays may be NumPy or CuPy; the comparison is done in
NumPy.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from ..backend import asnumpy, backend_of, to_backend


class Layer(Protocol):
    """What check_layer_gradients needs of a layer."""

    params: dict[str, Any]
    grads: dict[str, Any]

    def forward(self, x: Any) -> Any: ...

    def backward(self, gy: Any) -> Any: ...


class Loss(Protocol):
    """What check_loss_gradients needs of a loss."""

    def forward(self, pred: Any, target: Any) -> Any: ...

    def backward(self) -> Any: ...


def numerical_gradient(f: Callable[[], Any], x: Any, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of x.

    x is perturbed in place, one entry at a time, to x + eps and x - eps, and
    restored exactly afterwards (also if f raises). f takes no arguments: it
    must read x (or an object holding x) itself. Returns a float64 NumPy array
    of x's shape with (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) at i.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        orig = x[idx].copy()
        try:
            x[idx] = orig + eps
            f_plus = float(f())
            x[idx] = orig - eps
            f_minus = float(f())
        finally:
            x[idx] = orig
        grad[idx] = (f_plus - f_minus) / (2 * eps)
    return grad


def _require_float64(owner: str, what: str, a: Any) -> None:
    if a.dtype != np.float64:
        raise TypeError(f"{owner}: gradient checks need float64 arrays, {what} is {a.dtype} "
                        f"(finite differences in lower precision are rounding noise)")


def _assert_close(owner: str, what: str, analytic: Any, numeric: np.ndarray,
                  rtol: float, atol: float) -> None:
    """Raise AssertionError naming owner and what, with the worst entry, on mismatch."""
    a = asnumpy(analytic)
    if a.shape != numeric.shape:
        raise AssertionError(f"{owner}: gradient of {what} has shape {a.shape}, "
                             f"expected {numeric.shape}")
    bad = ~np.isclose(a, numeric, rtol=rtol, atol=atol)
    if bad.any():
        err = np.abs(a - numeric)
        worst = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0))), a.shape)
        raise AssertionError(
            f"{owner}: gradient of {what} does not match finite differences at "
            f"{int(bad.sum())} of {a.size} entries (rtol={rtol}, atol={atol}); worst at "
            f"index {tuple(int(i) for i in worst)}: analytic {float(a[worst])!r}, "
            f"numerical {float(numeric[worst])!r}, max abs error {float(err.max()):.3g}")


def check_layer_gradients(layer: Layer, x: Any, rtol: float = 1e-5, atol: float = 1e-7,
                          seed: int = 0, eps: float = 1e-6) -> None:
    """Check layer.backward and layer.grads against finite differences.

    x: the layer's input, any shape it accepts, float64. With a fixed random
    projection R (standard normal, shape of forward(x), drawn from ``seed``) the
    loss is L = sum(forward(x) * R), so dL/dy = R. backward(R) must match the
    numerical dL/dx, and each grads[k] the numerical dL/d params[k]. x and
    the parameters are left as they were; the layer's cached state is that of a
    forward(x) (no backward after it).

    Raises AssertionError naming the layer and the input or parameter whose
    gradient is wrong; TypeError if x or a parameter is not float64.
    """
    name = type(layer).__name__
    _require_float64(name, "x", x)
    y = layer.forward(x)  # builds a lazy layer's parameters
    params = getattr(layer, "params", {})
    for k, p in params.items():
        _require_float64(name, f"params[{k!r}]", p)
    rng = np.random.default_rng(seed)
    R = to_backend(rng.standard_normal(y.shape), backend_of(y))
    gx = layer.backward(R)
    gx = asnumpy(gx).copy()
    grads = getattr(layer, "grads", {})
    if set(params) != set(grads):
        raise AssertionError(f"{name}: params has keys {sorted(params)} but grads has "
                             f"{sorted(grads)} after backward")
    analytic = {k: asnumpy(g).copy() for k, g in grads.items()}

    def loss() -> float:
        return float((layer.forward(x) * R).sum())

    _assert_close(name, "the input x", gx, numerical_gradient(loss, x, eps), rtol, atol)
    for k, p in params.items():
        _assert_close(name, f"params[{k!r}]", analytic[k], numerical_gradient(loss, p, eps),
                      rtol, atol)
    layer.forward(x)


def check_loss_gradients(loss: Loss, pred: Any, target: Any, rtol: float = 1e-5,
                         atol: float = 1e-7, eps: float = 1e-6) -> None:
    """Check loss.backward() against finite differences of loss.forward(pred, target).

    pred: float64, the shape the loss accepts; target: whatever the loss takes
    (labels or one-hot), left untouched. pred is left as it was. Raises
    AssertionError naming the loss if dpred does not match; TypeError if pred
    is not float64.
    """
    name = type(loss).__name__
    _require_float64(name, "pred", pred)
    value = loss.forward(pred, target)
    if np.ndim(asnumpy(value)) != 0:
        raise AssertionError(f"{name}: forward must return a scalar, got shape "
                             f"{np.shape(asnumpy(value))}")
    dpred = asnumpy(loss.backward()).copy()

    def f() -> float:
        return float(loss.forward(pred, target))

    _assert_close(name, "pred", dpred, numerical_gradient(f, pred, eps), rtol, atol)
    loss.forward(pred, target)
