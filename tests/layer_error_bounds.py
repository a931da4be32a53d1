"""Error bounds for one layer's forward, backward and parameter gradients, and for the losses.

Each function bounds |computed - exact| for ONE computation in the input's
dtype, summed in any order (Higham's gamma, error_bounds.py), so two
computations of the same quantity (NumPy's and CuPy's) differ by at most twice
the bound. Magnitudes are evaluated in float64 from the same inputs. Terms of
second order (a product of two error bounds, below u for these inputs) are
covered by one extra rounding where they arise.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

import dualconv as dc
from error_bounds import TRANSCENDENTAL_ULPS, gamma, unit_roundoff


def transcendental(dtype: Any) -> float:
    """Relative error of one exp, log, log1p or tanh: TRANSCENDENTAL_ULPS ulp (CUDA
    documents 1-2 ulp for these in float32 and float64, NumPy up to 4)."""
    return TRANSCENDENTAL_ULPS * 2 * unit_roundoff(dtype)


def _float64_twin(layer: dc.Layer, absolute: bool) -> dc.Layer:
    twin = copy.deepcopy(layer).astype(np.float64)
    if absolute:
        for name, value in twin.params.items():
            twin.params[name] = np.abs(value)
    return twin


def _linear_terms(layer: dc.Layer, gy: np.ndarray) -> tuple[int, int, int]:
    """Terms summed into one element of y, of gx and of a parameter gradient."""
    if isinstance(layer, dc.Conv2D):
        O, C, kh, kw = layer.params["weight"].shape
        # gx: a length-O GEMM sum, then col2im adds at most kh*kw of those per pixel
        return C * kh * kw + 1, O + kh * kw, gy.size // O
    if isinstance(layer, dc.Dense):
        fan_in, fan_out = layer.params["weight"].shape
        return fan_in + 1, fan_out, gy.shape[0]
    window = layer.kh * layer.kw  # AvgPool2D: a window sum, then one division
    return window + 1, window + 1, 0


def layer_bounds(layer: dc.Layer, x: np.ndarray, gy: np.ndarray) -> dict[str, np.ndarray]:
    """Bounds for ``layer.forward(x)`` ("y"), ``layer.backward(gy)`` ("gx") and each
    ``layer.grads[k]`` ("grad:k"), one computation each, in x's dtype.

    - Conv2D, Dense, AvgPool2D are linear: a K-term sum is within gamma(K) times the
      same computation with |parameters| on |x| and |gy| (evaluated in float64).
    - MaxPool2D selects (y exact); its backward sums at most kh*kw routed gradients.
    - Flatten, ReLU, HardTanh are exact; LeakyReLU rounds alpha and one product.
    - Tanh, Sigmoid, Softmax: see the comments below (t = one transcendental call).
    """
    dtype = x.dtype
    u, t = unit_roundoff(dtype), transcendental(dtype)
    x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
    if isinstance(layer, (dc.Conv2D, dc.Dense, dc.AvgPool2D)):
        twin = _float64_twin(layer, absolute=True)
        k_y, k_gx, k_grad = _linear_terms(layer, gy)
        out = {"y": gamma(k_y, dtype) * twin.forward(np.abs(x64)),
               "gx": gamma(k_gx, dtype) * twin.backward(np.abs(gy64))}
        out.update({f"grad:{k}": gamma(k_grad, dtype) * g for k, g in twin.grads.items()})
        return out
    if isinstance(layer, dc.MaxPool2D):
        twin = _float64_twin(layer, absolute=False)
        y = twin.forward(x64)
        return {"y": np.zeros_like(y), "gx": gamma(layer.kh * layer.kw, dtype) * twin.backward(np.abs(gy64))}
    y = _float64_twin(layer, absolute=False).forward(x64)
    if isinstance(layer, (dc.Flatten, dc.ReLU, dc.HardTanh)):
        return {"y": np.zeros_like(y), "gx": np.zeros_like(x64)}
    if isinstance(layer, dc.LeakyReLU):
        # alpha rounded to the dtype (u), then one product (u)
        return {"y": 2 * u * np.abs(y), "gx": 2 * u * np.abs(gy64) * np.where(x64 > 0, 1, layer.alpha)}
    if isinstance(layer, dc.Tanh):
        # y' = y (1 + d), |d| <= t; 1 - y'^2 is off by a y^2 (a = 2t + t^2 + u (1 + t)^2 with
        # the rounding of y * y), then the subtraction and the product with gy round.
        a = 2 * t + t * t + u * (1 + t) ** 2
        return {"y": t * np.abs(y),
                "gx": np.abs(gy64) * (a * y * y + 2 * u * (np.abs(1 - y * y) + a * y * y))}
    if isinstance(layer, dc.Sigmoid):
        # y = exp(-L), L = logaddexp(0, -x) = max(0, -x) + log1p(exp(-|x|)): L is off by
        # t (the exp, through log1p's slope <= 1) + t log 2 (log1p) + u |L| (the addition);
        # exp then adds t, and e^{dL} - 1 <= 2 dL for these tiny dL.
        L = np.logaddexp(0, -x64)
        r = 2 * (t * (1 + math.log(2)) + u * np.abs(L)) + t
        e = r * np.abs(y)
        slope = np.abs(y * (1 - y))
        return {"y": e,
                "gx": np.abs(gy64) * (e * (np.abs(1 - y) + np.abs(y) + e) + 3 * u * slope) * (1 + 2 * u)}
    if isinstance(layer, dc.Softmax):
        # e_i = exp(x_i - max): relative error u |x_i - max| (the subtraction) + t; the row sum
        # adds gamma(C); y = e / sum adds one division: r_y = 2 max_i r_e + gamma(C) + 2u.
        C = x.shape[1]
        s = np.abs(x64 - x64.max(axis=1, keepdims=True))
        r_y = 2 * (2 * u * s.max(axis=1, keepdims=True) + t) + gamma(C, dtype) + 2 * u
        # gx = y (gy - S), S = sum(gy * y): S is off by gamma(C) sum|gy y| + sum|gy| r_y |y|
        dot = (gy64 * y).sum(axis=1, keepdims=True)
        dS = gamma(C, dtype) * np.abs(gy64 * y).sum(axis=1, keepdims=True) \
            + (np.abs(gy64) * r_y * np.abs(y)).sum(axis=1, keepdims=True)
        inner = np.abs(gy64 - dot)
        gx = np.abs(y) * (r_y * inner + dS + 2 * u * inner) + u * np.abs(y * inner)
        return {"y": r_y * np.abs(y), "gx": gx * (1 + 2 * u)}
    raise TypeError(f"layer_bounds: no error model for {layer.name}")


def softmax_cross_entropy_rows_bound(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the DIFFERENCE of two computations of the fused kernel's (row loss, gz).

    Each side: exp and log within 2 ulp (CUDA's documented bound for expf and
    logf, which the C and NumPy libraries meet too), so each term of the
    C-term sum is within 2 eps relative and the sum within (C + 2) eps; log_z
    is then within (C + 4) eps (1 + |log_z|). The row loss log_z - shifted
    adds eps |loss|; p = exp(shifted - log_z) is within 2 eps + the argument's
    error, relative, and gz = (p - t) / N adds eps |p - t| / N. Two sides, so twice.
    Plus the smallest normal number: the GPU flushes float32 subnormals to zero
    (CuPy's -ftz=true; the emulation does the same), which moves a result by less.
    """
    eps = np.finfo(z.dtype).eps
    z64 = z.astype(np.float64)
    N, C = z.shape
    shifted = z64 - z64.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    err_log_z = (C + 4) * eps * (1 + np.abs(log_z))
    loss = -log_p[np.arange(N), labels]
    loss_bound = 2 * (err_log_z[:, 0] + eps * np.abs(loss))
    p = np.exp(log_p)
    t = np.eye(C)[labels]
    gz_bound = 2 * (p * (err_log_z + eps * np.abs(log_p) + 2 * eps) + eps * np.abs(p - t)) / N
    tiny = np.finfo(z.dtype).tiny
    return loss_bound + tiny, gz_bound + tiny


def mean_bound(terms: np.ndarray, term_errors: np.ndarray, dtype: Any) -> float:
    """One computation of terms.mean() from terms each off by term_errors: their mean,
    plus the n-term sum and the division, gamma(n + 1) mean(|terms| + errors)."""
    n = terms.size
    return float(term_errors.mean() + gamma(n + 1, dtype) * (np.abs(terms) + term_errors).mean())


def loss_bounds(case: str, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Bounds on the DIFFERENCE of two computations of (loss value, gradient) for the
    losses of test_backend_parity.test_loss_matches_numpy, in pred's dtype."""
    dtype = pred.dtype
    u, t = unit_roundoff(dtype), transcendental(dtype)
    p, y = pred.astype(np.float64), np.asarray(target, dtype=np.float64)
    n = p.size
    if case == "softmax-ce":
        rows, gz = softmax_cross_entropy_rows_bound(pred, target)
        exact_rows = np.log(np.exp(p).sum(axis=1)) - p[np.arange(len(p)), target]
        # the kernel's rows differ by ``rows``; each side's mean of them rounds once more
        return float(rows.mean()) + 2 * mean_bound(exact_rows, np.zeros_like(exact_rows), dtype), gz
    if case == "mse":
        diff = p - y
        # diff rounds once, its square twice more (relative): 3u per term
        value = mean_bound(diff * diff, 3 * u * diff * diff * (1 + 2 * u), dtype)
        return 2 * value, 2 * gamma(3, dtype) * np.abs(2 * diff / n)
    if case == "bce":
        A, B = np.abs(y * np.log(p)), np.abs((1 - y) * np.log(1 - p))
        # each log within t relative, and 2u absolute from its argument's rounding (1 - p);
        # the products, 1 - t, the sum and the negation round: 4u relative
        errors = (t + 4 * u) * (A + B) + 2 * u * np.abs(1 - y) + 2 * u * np.abs(y)
        terms = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        grad = (p - y) / (p * (1 - p)) / n
        return 2 * mean_bound(terms, errors, dtype), 2 * gamma(6, dtype) * np.abs(grad)
    if case == "bce-logits":
        L = np.logaddexp(0, p)
        # logaddexp as in layer_bounds' Sigmoid; t z and the subtraction round once each
        errors = t * (1 + math.log(2)) + u * np.abs(L) + u * np.abs(y * p) + u * np.abs(L - y * p)
        value = mean_bound(L - y * p, errors * (1 + 2 * u), dtype)
        s = 1 / (1 + np.exp(-p))
        r = 2 * (t * (1 + math.log(2)) + u * np.abs(np.logaddexp(0, -p))) + t
        grad = (r * np.abs(s) + 2 * u * np.abs(s - y)) / n * (1 + 2 * u)
        return 2 * value, 2 * grad
    raise ValueError(case)


def cross_entropy_loss_bound(model: dc.Sequential, x: np.ndarray, labels: np.ndarray) -> float:
    """Bound on the DIFFERENCE of two computations of SoftmaxCrossEntropy's mean loss of
    ``model.forward(x)`` (no Dropout or BatchNorm: forward_error_bound's layers).

    Each side's logits are within d = forward_error_bound(model, x) of the exact ones; a
    row loss, log-sum-exp(z) - z[label], moves by at most 2 max_j d (log-sum-exp is
    1-Lipschitz in the max norm), so the two sides' rows by twice that, plus the fused
    kernel's own rounding (softmax_cross_entropy_rows_bound) and each side's mean.
    """
    from error_bounds import exact_forward, forward_error_bound
    d = forward_error_bound(model, x)
    z = exact_forward(model, x)
    rows, _ = softmax_cross_entropy_rows_bound(z.astype(model.dtype), labels)
    exact_rows = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1) \
        - z[np.arange(len(z)), labels]
    carried = 4 * d.max(axis=1) * (1 + 2 * unit_roundoff(model.dtype))
    return float((carried + rows).mean()) + 2 * mean_bound(exact_rows, np.zeros_like(exact_rows), model.dtype)


def batchnorm_bounds(layer: Any, x: np.ndarray, gy: np.ndarray | None = None,
                     dtype: Any = None) -> dict[str, np.ndarray]:
    """Bounds for one BatchNorm1D/2D computation in ``dtype`` (x's by default), first
    order, in the layer's mode: "y", "gx" and "grad:weight", "grad:bias" (with gy),
    "running_mean", "running_var" (training mode).

    Per channel, n values: the mean is within gamma(n + 1) mean|x|; c = x - mean adds
    u|c|; the variance mean(c^2) moves by mean(2|c| dc) and rounds within gamma(n + 2);
    1 / sqrt(var + eps) is off by dvar / (2 (var + eps)) relative, plus 3u (the addition,
    sqrt, division); x_hat = c inv_std and y = x_hat w + b add their roundings. In eval
    mode the running statistics are rounded to the dtype (u each). The backward repeats
    this for gx = inv_std (g - mean(g) - x_hat mean(g x_hat)), g = gy w.
    """
    dtype = dtype or x.dtype
    u = unit_roundoff(dtype)
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(a for a in range(x.ndim) if a != 1)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    n = x.size // x.shape[1]
    w = layer.params["weight"].astype(np.float64).reshape(shape)
    b = layer.params["bias"].astype(np.float64).reshape(shape)
    eps = layer.eps
    if layer.training:
        mean = x.mean(axis=axes, keepdims=True)
        dm = gamma(n + 1, dtype) * np.abs(x).mean(axis=axes, keepdims=True)
        c = x - mean
        var = (c * c).mean(axis=axes, keepdims=True)
        dc = dm + u * np.abs(c)
        dvar = (2 * np.abs(c) * dc + dc * dc).mean(axis=axes, keepdims=True) + gamma(n + 2, dtype) * var
    else:
        mean = layer.buffers["running_mean"].reshape(shape)
        var = layer.buffers["running_var"].reshape(shape)
        c = x - mean
        dc = u * np.abs(mean) + u * np.abs(c) * (1 + u)
        dvar = u * var
    inv = 1 / np.sqrt(var + eps)
    r = (dvar + u * (var + eps)) / (2 * (var + eps)) + 3 * u
    x_hat = c * inv
    dxh = (dc * inv + np.abs(x_hat) * r + u * np.abs(x_hat)) * (1 + 2 * u)
    y = x_hat * w + b
    out = {"y": (np.abs(w) * dxh + u * np.abs(x_hat * w) + u * np.abs(y)) * (1 + 2 * u)}
    if layer.training:
        m = layer.momentum
        step = 2 * gamma(4, dtype)
        running_mean = layer.buffers["running_mean"]
        out["running_mean"] = m * dm.reshape(-1) + step * ((1 - m) * np.abs(running_mean) + m * np.abs(mean.reshape(-1)))
        unbiased = var.reshape(-1) * n / (n - 1)
        out["running_var"] = (m * (dvar.reshape(-1) * n / (n - 1) + 2 * u * unbiased)
                              + step * ((1 - m) * np.abs(layer.buffers["running_var"]) + m * unbiased))
    if gy is None:
        return out
    gy = np.asarray(gy, dtype=np.float64)
    out["grad:weight"] = (np.abs(gy) * dxh).sum(axis=axes) + gamma(n, dtype) * np.abs(gy * x_hat).sum(axis=axes)
    out["grad:bias"] = gamma(n, dtype) * np.abs(gy).sum(axis=axes)
    g = gy * w
    dg = u * np.abs(g)
    if layer.training:
        a = g.mean(axis=axes, keepdims=True)
        da = dg.mean(axis=axes, keepdims=True) + gamma(n + 1, dtype) * np.abs(g).mean(axis=axes, keepdims=True)
        q = (g * x_hat).mean(axis=axes, keepdims=True)
        dq = ((np.abs(g) * dxh + np.abs(x_hat) * dg).mean(axis=axes, keepdims=True)
              + gamma(n + 2, dtype) * np.abs(g * x_hat).mean(axis=axes, keepdims=True))
        inner = g - a - x_hat * q
        d_inner = dg + da + dxh * np.abs(q) + np.abs(x_hat) * dq + 3 * u * (np.abs(g) + np.abs(a) + np.abs(x_hat * q))
    else:
        inner, d_inner = g, dg
    out["gx"] = (inv * d_inner + np.abs(inner) * inv * r + u * np.abs(inner * inv)) * (1 + 2 * u)
    return out



def assert_step_layer_by_layer(cpu_model: dc.Sequential, gpu_model: dc.Sequential, x: np.ndarray,
                               labels: np.ndarray) -> None:
    """One training-mode forward and backward (SoftmaxCrossEntropy) of two models in the same
    state, one on NumPy and one on CuPy, compared layer by layer: each GPU layer takes the
    CPU layer's input (or gradient), so every output, input gradient, parameter gradient
    and running statistic is held to twice its own one-layer bound (layer_bounds,
    batchnorm_bounds; Dropout draws the same mask on both and rounds one product).
    Leaves the CPU model's grads filled, ready for an optimizer step.
    """
    from dualconv.backend import asnumpy, to_backend
    from error_bounds import assert_within
    u = unit_roundoff(cpu_model.dtype)
    inputs, running_bounds = [], {}
    h = x
    for index, (cpu, gpu) in enumerate(zip(cpu_model.layers, gpu_model.layers)):
        inputs.append(h)
        is_bn = isinstance(cpu, (dc.BatchNorm1D, dc.BatchNorm2D))
        if is_bn:
            bounds = batchnorm_bounds(cpu, h)
            running_bounds[index] = bounds
        out = cpu.forward(h)
        on_gpu = asnumpy(gpu.forward(to_backend(h, "cupy")))
        if isinstance(cpu, dc.Dropout):
            bound = u * np.abs(out)
        else:
            bound = bounds["y"] if is_bn else layer_bounds(cpu, h, np.zeros_like(out))["y"]
        assert_within(on_gpu, out, 2 * bound, f"layer {index} {cpu.name} y: ")
        for key in ("running_mean", "running_var") if is_bn else ():
            assert_within(asnumpy(gpu.buffers[key]), cpu.buffers[key], 2 * bounds[key],
                          f"layer {index} {cpu.name} {key}: ")
        h = out
    loss = dc.SoftmaxCrossEntropy()
    loss.forward(h, labels)
    g = loss.backward()
    for index in reversed(range(len(cpu_model.layers))):
        cpu, gpu = cpu_model.layers[index], gpu_model.layers[index]
        gx = cpu.backward(g)
        gx_gpu = asnumpy(gpu.backward(to_backend(g, "cupy")))
        if isinstance(cpu, dc.Dropout):
            bounds = {"gx": u * np.abs(gx)}
        elif isinstance(cpu, (dc.BatchNorm1D, dc.BatchNorm2D)):
            bounds = batchnorm_bounds(cpu, inputs[index], g)
        else:
            bounds = layer_bounds(cpu, inputs[index], g)
        assert_within(gx_gpu, gx, 2 * bounds["gx"], f"layer {index} {cpu.name} gx: ")
        for key in cpu.grads:
            assert_within(asnumpy(gpu.grads[key]), cpu.grads[key], 2 * bounds[f"grad:{key}"],
                          f"layer {index} {cpu.name} grad {key}: ")
        g = gx
