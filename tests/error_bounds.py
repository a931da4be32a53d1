"""Floating-point tolerances derived from the computation, not from one machine.

A sum of K floating-point terms, added in any order (a BLAS kernel, a loop, a
reduction tree), lies within gamma(K) * sum|terms| of the exact sum, where
gamma(K) = K*u / (1 - K*u) and u = eps/2 is the unit roundoff (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., section 3.1). A dot
product or a matrix product adds one rounding for each product, so K terms
are covered by gamma(K) for the products and the sums together.

Two computations of the same quantity that are each within ``bound`` of the
exact value differ by at most ``2 * bound``. That is how these tests compare
two code paths (batched and unbatched, BLAS and loops, CPU and GPU) without a
tolerance tuned on one machine: which kernel OpenBLAS picks (SkylakeX on both machine
kinds measured, Haswell on an earlier AMD VM) changes the order of the sums, never the
bound.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

import dualconv as dc

TRANSCENDENTAL_ULPS = 4
"""Error allowed for NumPy's exp/tanh/log, in units in the last place.

NumPy documents its SIMD float32 transcendental functions to within 4 ULP
(their scalar fallbacks are correctly rounded to within 1 ULP)."""


def unit_roundoff(dtype: Any) -> float:
    """u = eps / 2: the largest relative error of one rounding."""
    return float(np.finfo(dtype).eps) / 2


def gamma(k: int, dtype: Any) -> float:
    """gamma(k) = k*u / (1 - k*u): the relative bound of a length-k sum or dot product."""
    ku = k * unit_roundoff(dtype)
    if ku >= 1:
        raise ValueError(f"gamma({k}) is unbounded in {np.dtype(dtype)}")
    return ku / (1 - ku)


def matmul_bound(a: np.ndarray, b: np.ndarray, dtype: Any = None) -> np.ndarray:
    """Elementwise bound on the rounding error of ``a @ b`` computed in ``dtype``.

    a: (..., M, K), b: (..., K, P) -> (..., M, P): gamma(K) * (|a| @ |b|).
    """
    dtype = dtype or np.result_type(a, b)
    k = a.shape[-1]
    magnitude = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    return gamma(k, dtype) * magnitude


def sum_bound(terms: np.ndarray, axis: Any = None, dtype: Any = None) -> np.ndarray:
    """Bound on the rounding error of ``terms.sum(axis)`` computed in ``dtype``."""
    dtype = dtype or terms.dtype
    k = terms.size if axis is None else int(np.prod([terms.shape[i] for i in np.atleast_1d(axis)]))
    return gamma(max(k, 1), dtype) * np.abs(terms).astype(np.float64).sum(axis=axis)


def assert_within(actual: Any, desired: Any, bound: Any, what: str = "") -> None:
    """Assert |actual - desired| <= bound elementwise (NaN and inf must match exactly)."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), np.broadcast_shapes(actual.shape, desired.shape))
    assert actual.shape == desired.shape, f"{what}shape {actual.shape} != {desired.shape}"
    same_special = (np.isnan(actual) & np.isnan(desired)) | ((actual == desired) & np.isinf(desired))
    err = np.where(same_special, 0.0, np.abs(actual - desired))
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err - bound, -np.inf))), err.shape)
        raise AssertionError(
            f"{what}{int(bad.sum())} of {err.size} elements exceed the error bound; worst at "
            f"{tuple(int(j) for j in i)}: actual {actual[i]!r}, desired {desired[i]!r}, "
            f"|difference| {err[i]:.3g} > bound {bound[i]:.3g}")


# -- whole models ----------------------------------------------------------------

def _as_float64_abs(layer: dc.Layer) -> dc.Layer:
    """A float64 copy of a linear layer whose parameters are |params|."""
    twin = copy.deepcopy(layer).astype(np.float64)
    for name, value in twin.params.items():
        twin.params[name] = np.abs(value)
    return twin.eval()


def _without_bias(layer: dc.Layer) -> dc.Layer:
    twin = copy.deepcopy(layer)
    if "bias" in twin.params:
        twin.params["bias"] = np.zeros_like(twin.params["bias"])
    return twin


def _terms_per_output(layer: dc.Layer) -> int:
    """Products (and the bias) summed into one output of a Dense or Conv2D layer."""
    weight = layer.params["weight"]
    fan_in = weight.shape[0] if isinstance(layer, dc.Dense) else int(np.prod(weight.shape[1:]))
    return fan_in + ("bias" in layer.params)


def forward_error_bound(model: dc.Sequential, x: np.ndarray, onnxruntime: bool = False) -> np.ndarray:
    """Bound on |computed - exact| for ``model.forward(x)`` in eval mode, in the model's dtype.

    Walks the layers with an exact (float64) activation h and a bound d on
    the error of the computed one, as a running error analysis does:
    - Dense / Conv2D (K terms per output): d' = gamma(K) * L_abs(|h| + d) + |W| * d,
      where L_abs is the layer with |weights|, computed in float64;
    - ReLU, max-pool, Flatten, Dropout (eval), Identity: 1-Lipschitz and exact, d' = op(d);
    - avg-pool (K = kh*kw): d' = gamma(K + 2) * pool(|h| + d) + pool(d): the window sum, then
      a division or a rounded reciprocal and a product;
    - LeakyReLU: slopes 1 and alpha, alpha rounded and one product: max(1, |alpha|) (1 + 3u) d + 3u |y|;
    - HardTanh: 1-Lipschitz, its rounded limits move a clipped value by u |y|;
    - Tanh / Sigmoid: 1-Lipschitz, plus their own few ULP of rounding;
    - Softmax: inputs off by at most D = max(d) in their row move each output by a factor
      within e^(+-2D); the computed softmax adds r |y|, r = 2 (2u s + t) + gamma(C + 2), t one
      exp (TRANSCENDENTAL_ULPS), s = the row's largest |x - max|, C classes (the row sum, and a
      division or a reciprocal and a product);
    - BatchNorm (eval, running statistics): y = (x - mean) s + b, s = weight / sqrt(var + eps),
      computed as written or folded, x s + (b - mean s): each path rounds at most 8 times (eps,
      the addition, sqrt, the division, the products, the sums), so
      d' = |s| d + gamma(8) ((|h| + d + |mean|) |s| + |b|).

    ``onnxruntime`` also covers ONNX Runtime's CPU kernels: its logistic is 1/2 plus an odd
    rational function of x (MLAS, after Eigen), accurate to a few ULP of that rational part,
    so its error is TRANSCENDENTAL_ULPS ulp of |y - 1/2| plus the addition's rounding of |y|;
    and it folds a BatchNormalization into the Conv before it (W s and (b - mean) s + beta,
    computed in the dtype), so each product also carries the rounding of s and of W s:
    gamma(6) |s| L_abs(|h| + d) more.
    """
    dtype = model.dtype
    u = unit_roundoff(dtype)
    t = 2 * TRANSCENDENTAL_ULPS * u
    h = np.asarray(x, dtype=np.float64)
    d = np.zeros_like(h)
    magnitude = None  # L_abs(|h| + d) of a Dense or Conv2D just before, else None
    for layer in model.layers:
        before, magnitude = magnitude, None
        if isinstance(layer, (dc.Dense, dc.Conv2D)):
            abs_layer = _as_float64_abs(layer)
            magnitude = abs_layer.forward(np.abs(h) + d)
            d = gamma(_terms_per_output(layer), dtype) * magnitude + _without_bias(abs_layer).forward(d)
            h = copy.deepcopy(layer).astype(np.float64).eval().forward(h)
        elif isinstance(layer, (dc.Dropout, dc.Identity)):
            pass  # the identity in eval mode
        elif isinstance(layer, dc.Flatten):
            h, d = h.reshape(len(h), -1), d.reshape(len(d), -1)
        elif isinstance(layer, dc.ReLU):
            h = np.maximum(h, 0.0)
        elif isinstance(layer, dc.MaxPool2D):
            twin = copy.deepcopy(layer)
            h, d = twin.forward(h), twin.forward(d)
        elif isinstance(layer, dc.AvgPool2D):
            twin = copy.deepcopy(layer)
            d = gamma(layer.kh * layer.kw + 2, dtype) * twin.forward(np.abs(h) + d) + twin.forward(d)
            h = twin.forward(h)
        elif isinstance(layer, dc.LeakyReLU):
            h = np.where(h > 0, h, layer.alpha * h)
            d = max(1.0, abs(layer.alpha)) * (1 + 3 * u) * d + 3 * u * np.abs(h)
        elif isinstance(layer, dc.HardTanh):
            h = np.clip(h, layer.min_val, layer.max_val)
            d = d + u * np.abs(h)
        elif isinstance(layer, dc.Tanh):
            h = np.tanh(h)
            d = d + t * np.abs(h)
        elif isinstance(layer, dc.Sigmoid):
            h = copy.deepcopy(layer).forward(h)
            d = d + t * np.abs(h) + (t * np.abs(h - 0.5) + u * np.abs(h) if onnxruntime else 0)
        elif isinstance(layer, dc.Softmax):
            spread = 2 * d.max(axis=1, keepdims=True)
            s = (h.max(axis=1, keepdims=True) - h).max(axis=1, keepdims=True) + spread
            r = 2 * (2 * u * s + t) + gamma(h.shape[1] + 2, dtype)
            h = np.exp(h - h.max(axis=1, keepdims=True))
            h = h / h.sum(axis=1, keepdims=True)
            d = h * (np.expm1(spread) + r * np.exp(spread))
        elif isinstance(layer, (dc.BatchNorm1D, dc.BatchNorm2D)):
            shape = (1, -1) + (1,) * (h.ndim - 2)
            stats = {k: v.astype(np.float64).reshape(shape) for k, v in layer.buffers.items()}
            weight = layer.params["weight"].astype(np.float64).reshape(shape) if layer.affine else 1.0
            bias = layer.params["bias"].astype(np.float64).reshape(shape) if layer.affine else 0.0
            s = weight / np.sqrt(stats["running_var"] + layer.eps)
            mean = stats["running_mean"]
            d = np.abs(s) * d + gamma(8, dtype) * ((np.abs(h) + d + np.abs(mean)) * np.abs(s) + np.abs(bias))
            if onnxruntime and before is not None:
                d = d + gamma(6, dtype) * np.abs(s) * before
            h = (h - mean) * s + bias
        else:
            raise TypeError(f"forward_error_bound: no error model for {layer.name}")
    return d


def exact_forward(model: dc.Sequential, x: np.ndarray) -> np.ndarray:
    """The model's eval-mode forward in float64: the reference the bound is about."""
    twin = copy.deepcopy(model).astype(np.float64).eval()
    return twin.forward(np.asarray(x, dtype=np.float64))
