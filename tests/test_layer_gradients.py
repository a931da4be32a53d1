"""Finite-difference gradient checks, in float64, of every layer (the losses'
are in test_loss_gradients.py).

Each layer's backward (dL/dx) and grads (dL/dparams) are compared with central
differences of L = sum(forward(x) * R) for a fixed random R (see
dualconv.testing.check_layer_gradients). Inputs are chosen away from the
points where a layer is not differentiable (ReLU's 0, HardTanh's +-1, ties in
a max-pool window), so eps = 1e-6 never crosses a kink.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import dualconv as dc
from dualconv.testing import check_layer_gradients
from error_bounds import assert_within, gamma
from gradient_checks import ATOL, RTOL, randn

def check(layer: Any, x: np.ndarray, seed: int = 0) -> None:
    """check_layer_gradients on a dualconv layer.

    The helper wants params and grads to have the same keys before it starts,
    while a dualconv layer fills ``grads`` only at its first backward, so one
    forward/backward comes first when the layer already has parameters.
    """
    if layer.params and set(layer.grads) != set(layer.params):
        layer.backward(np.ones_like(layer.forward(x)))
    check_layer_gradients(layer, x, rtol=RTOL, atol=ATOL, seed=seed)


def away_from(values: np.ndarray, kinks: tuple[float, ...], margin: float = 0.1) -> np.ndarray:
    """Push every entry at least ``margin`` away from each kink."""
    out = values.copy()
    for k in kinks:
        near = np.abs(out - k) < margin
        out[near] = k + np.where(out[near] >= k, margin, -margin) * 1.5
    return out


def tie_free(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Distinct values at least 0.05 apart (a shuffled ramp), so no window has a tie."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.05 - n * 0.025).reshape(shape).astype(np.float64)


# -- Conv2D ------------------------------------------------------------------------

CONV_CASES = [
    pytest.param(dict(in_channels=2, out_channels=3, kernel_size=3), (2, 2, 5, 6), id="3x3-valid"),
    pytest.param(dict(in_channels=2, out_channels=2, kernel_size=3, stride=2), (2, 2, 7, 6), id="stride2"),
    pytest.param(dict(in_channels=1, out_channels=2, kernel_size=3, stride=(2, 1), padding=1),
                 (2, 1, 6, 5), id="stride-2x1-pad1"),
    pytest.param(dict(in_channels=2, out_channels=2, kernel_size=(3, 5), padding="same"),
                 (1, 2, 5, 6), id="same-rect-3x5"),
    pytest.param(dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", dilation=2),
                 (1, 2, 6, 6), id="same-dilated"),
    pytest.param(dict(in_channels=2, out_channels=2, kernel_size=(2, 3), dilation=(2, 1)),
                 (2, 2, 6, 5), id="dilation-2x1-rect"),
    pytest.param(dict(in_channels=3, out_channels=2, kernel_size=2, padding=(1, 0), bias=False),
                 (2, 3, 4, 4), id="no-bias-pad-1x0"),
    pytest.param(dict(in_channels=1, out_channels=1, kernel_size=1, stride=2), (1, 1, 5, 5),
                 id="1x1-stride2"),
]


@pytest.mark.parametrize("kwargs, shape", CONV_CASES)
def test_conv2d_gradients(kwargs: dict, shape: tuple[int, ...]) -> None:
    layer = dc.Conv2D(**kwargs).astype(np.float64)
    layer.reset_parameters(np.random.default_rng(1))
    if "bias" in layer.params:
        layer.params["bias"][...] = np.linspace(-0.5, 0.5, layer.out_channels)
    check(layer, randn(shape, 2))
    assert ("bias" in layer.grads) == kwargs.get("bias", True)


def test_conv2d_lazy_float64_gradients() -> None:
    """in_channels=None: a float64 first forward builds float64 parameters."""
    layer = dc.Conv2D(None, 2, 3, padding=1)
    check(layer, randn((2, 2, 4, 5), 3))
    assert layer.params["weight"].dtype == np.float64
    assert layer.grads["weight"].dtype == np.float64


# -- Dense --------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradients(bias: bool) -> None:
    layer = dc.Dense(4, 3, bias=bias).astype(np.float64)
    if bias:
        layer.params["bias"][...] = [0.5, -0.2, 0.1]
    check(layer, randn((5, 4), 4))
    assert sorted(layer.grads) == (["bias", "weight"] if bias else ["weight"])


def test_dense_input_gradient_keeps_a_feature_major_input_order() -> None:
    """x stored feature-major (Flatten of batch-last images): gx is stored the same
    way, and the gradients still match finite differences."""
    layer = dc.Dense(4, 3).astype(np.float64)
    x = np.asfortranarray(randn((5, 4), 4))
    layer.forward(x)
    assert layer.backward(np.ones((5, 3))).flags.f_contiguous
    check(layer, x)


@pytest.mark.parametrize("features", [4, 25088])
def test_dense_forward_of_a_feature_major_input(features: int) -> None:
    """x stored feature-major is multiplied as y.T = W.T @ x.T: within the rounding bound
    of the exact x @ W + b, as a C-ordered x is (25,088 features, weidman's: summed in
    blocks)."""
    rng = np.random.default_rng(8)
    layer = dc.Dense(features, 10)
    layer.params["bias"][...] = rng.standard_normal(10)
    x = rng.standard_normal((32, features)).astype(np.float32)
    w, b = (layer.params[k].astype(np.float64) for k in ("weight", "bias"))
    exact = x.astype(np.float64) @ w + b
    bound = gamma(features + 1, np.float32) * (np.abs(x).astype(np.float64) @ np.abs(w) + np.abs(b))
    for stored in (np.ascontiguousarray(x), np.asfortranarray(x)):
        y = layer.forward(stored)
        assert y.shape == (32, 10) and y.dtype == np.float32
        assert_within(y, exact, bound)


def test_dense_lazy_float64_gradients() -> None:
    layer = dc.Dense(None, 2)
    check(layer, randn((3, 6), 5))
    assert layer.params["weight"].shape == (6, 2)


# -- pooling ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, shape", [
    pytest.param(dict(kernel_size=2), (2, 2, 4, 6), id="2x2"),
    pytest.param(dict(kernel_size=3, stride=1), (1, 2, 5, 5), id="overlap-3s1"),
    pytest.param(dict(kernel_size=3, stride=2), (2, 1, 7, 5), id="overlap-3s2"),
    pytest.param(dict(kernel_size=(2, 3), stride=(1, 2)), (1, 2, 4, 7), id="rect"),
    pytest.param(dict(kernel_size=3, stride=2, padding=1), (1, 2, 5, 6), id="pad1"),
    pytest.param(dict(kernel_size=2, stride=3), (1, 1, 7, 7), id="gaps"),
])
def test_maxpool_gradients(kwargs: dict, shape: tuple[int, ...]) -> None:
    check(dc.MaxPool2D(**kwargs), tie_free(shape, 6))


def test_maxpool_negative_inputs_with_padding() -> None:
    """All inputs negative: padding (which never wins) must not take the gradient."""
    x = tie_free((1, 1, 4, 4), 7)
    x -= x.max() + 1.0
    layer = dc.MaxPool2D(3, stride=1, padding=1)
    check(layer, x)
    gx = layer.backward(np.ones((1, 1, 4, 4)))
    assert gx.sum() == pytest.approx(16.0)  # every unit of gradient lands on a real pixel


@pytest.mark.parametrize("kwargs, shape", [
    pytest.param(dict(kernel_size=2), (2, 2, 4, 6), id="2x2"),
    pytest.param(dict(kernel_size=3, stride=1), (1, 2, 5, 5), id="overlap-3s1"),
    pytest.param(dict(kernel_size=3, stride=2, padding=1), (2, 1, 5, 6), id="overlap-pad1"),
    pytest.param(dict(kernel_size=(2, 3), stride=1, padding=(1, 1)), (1, 2, 4, 5), id="rect-pad"),
])
def test_avgpool_gradients(kwargs: dict, shape: tuple[int, ...]) -> None:
    check(dc.AvgPool2D(**kwargs), randn(shape, 8))


# -- reshaping, dropout ----------------------------------------------------------------

def test_flatten_gradients() -> None:
    check(dc.Flatten(), randn((2, 3, 2, 4), 9))


class ReseededDropout:
    """A Dropout whose mask is the same at every forward: reseeded before each one."""

    def __init__(self, p: float, seed: int) -> None:
        self.layer, self.seed = dc.Dropout(p), seed
        self.params, self.grads = self.layer.params, self.layer.grads

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.layer.seed(self.seed)
        return self.layer.forward(x)

    def backward(self, gy: np.ndarray) -> np.ndarray:
        return self.layer.backward(gy)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_gradients_with_fixed_mask(p: float) -> None:
    wrapped = ReseededDropout(p, seed=11)
    x = randn((4, 10), 10)
    y = wrapped.forward(x)
    assert 0 < (y == 0).sum() < y.size  # the check runs on a real mask
    check_layer_gradients(wrapped, x, rtol=RTOL, atol=ATOL)


def test_dropout_eval_mode_gradient_is_identity() -> None:
    layer = dc.Dropout(0.5).eval()
    x = randn((3, 5), 12)
    check(layer, x)
    assert_array_equal(layer.forward(x), x)
    gy = randn((3, 5), 13)
    assert_array_equal(layer.backward(gy), gy)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_max_pool_in_eval_mode_gives_the_training_outputs_and_gradients(kwargs) -> None:
    """Eval mode skips the argmax in forward and finds it in backward: outputs and input
    gradients bit for bit those of training mode, on small integers (many ties)."""
    x = np.random.default_rng(3).integers(-2, 3, (2, 3, 7, 7)).astype(np.float32)
    layer = dc.MaxPool2D(**kwargs)
    y_train = layer.forward(x)
    gy = np.random.default_rng(4).standard_normal(y_train.shape).astype(np.float32)
    gx_train = layer.backward(gy)
    layer.eval()
    y_eval = layer.forward(x)
    assert_array_equal(y_eval, y_train)
    assert_array_equal(layer.backward(gy), gx_train)
    with pytest.raises(ValueError, match="expected a gradient of shape"):
        layer.backward(gy[:, :, :1])


def test_dropout_mask_consistency() -> None:
    """Forward zeroes entries and scales the rest by 1/(1-p); backward applies the same mask."""
    p = 0.25
    layer = dc.Dropout(p)
    layer.seed(3)
    x = np.abs(randn((50, 40), 14)) + 0.5  # nonzero, so y / x is the mask
    y = layer.forward(x)
    mask = y / x
    kept = mask != 0
    assert_allclose(mask[kept], 1 / (1 - p), rtol=1e-12)
    assert abs((~kept).mean() - p) < 0.03  # 2000 draws: p within ~4 standard errors
    gy = randn((50, 40), 15)
    assert_allclose(layer.backward(gy), gy * mask, rtol=1e-12)


def test_dropout_same_seed_same_mask_other_seed_other_mask() -> None:
    layer = dc.Dropout(0.5)
    x = np.ones((8, 8))
    layer.seed(1)
    a = layer.forward(x)
    layer.seed(1)
    b = layer.forward(x)
    layer.seed(2)
    c = layer.forward(x)
    assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_mask_is_the_same_in_any_memory_order() -> None:
    """Element [n, f] gets the same keep decision whatever the input's memory order:
    a feature-major x (as Flatten leaves batch-last images) gets the mask a C-ordered
    x gets, stored feature-major like x (so x * mask is fast), and backward applies it.
    (The mask itself is checked against a scalar reference in test_dropout_bits.py.)"""
    p = 0.5
    x = np.abs(randn((6, 9), 16)) + 0.5  # nonzero, so y / x is the mask
    masks = []
    for stored in (np.ascontiguousarray(x), np.asfortranarray(x)):
        layer = dc.Dropout(p)
        layer.seed(4)
        y = layer.forward(stored)
        assert y.flags.f_contiguous == stored.flags.f_contiguous and layer._cache.strides == stored.strides
        masks.append(y / stored)
        gy = randn((6, 9), 17)
        assert_array_equal(layer.backward(gy), gy * masks[-1])
    assert_array_equal(masks[0], masks[1])
    assert set(np.unique(masks[0])) == {0.0, 2.0}


# -- activations ----------------------------------------------------------------------

@pytest.mark.parametrize("make, kinks", [
    pytest.param(dc.ReLU, (0.0,), id="ReLU"),
    pytest.param(lambda: dc.LeakyReLU(0.1), (0.0,), id="LeakyReLU"),
    pytest.param(dc.Tanh, (), id="Tanh"),
    pytest.param(dc.HardTanh, (-1.0, 1.0), id="HardTanh"),
    pytest.param(lambda: dc.HardTanh(-0.5, 2.0), (-0.5, 2.0), id="HardTanh-custom"),
    pytest.param(dc.Sigmoid, (), id="Sigmoid"),
    pytest.param(dc.Identity, (), id="Identity"),
])
def test_elementwise_gradients(make: Any, kinks: tuple[float, ...]) -> None:
    x = away_from(2 * randn((3, 2, 3, 4), 16), kinks)
    check(make(), x)


@pytest.mark.parametrize("make, f, df", [
    (dc.ReLU, lambda x: np.where(x > 0, x, 0), lambda x: (x > 0) * 1.0),
    (lambda: dc.LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x), lambda x: np.where(x > 0, 1, 0.1)),
    (dc.Tanh, np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    (dc.HardTanh, lambda x: np.clip(x, -1, 1), lambda x: (np.abs(x) < 1) * 1.0),
    (dc.Sigmoid, lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    (dc.Identity, lambda x: x, lambda x: np.ones_like(x)),
], ids=["ReLU", "LeakyReLU", "Tanh", "HardTanh", "Sigmoid", "Identity"])
def test_elementwise_values_and_derivatives(make: Any, f: Any, df: Any) -> None:
    """Forward and backward against the textbook formulas."""
    x = away_from(np.linspace(-3, 3, 25).reshape(5, 5), (-1.0, 0.0, 1.0))
    layer = make()
    assert_allclose(layer.forward(x), f(x), rtol=1e-12, atol=1e-15)
    gy = randn((5, 5), 17)
    assert_allclose(layer.backward(gy), gy * df(x), rtol=1e-12, atol=1e-15)


def test_softmax_gradients() -> None:
    x = 2 * randn((4, 5), 18)
    check(dc.Softmax(), x)
    y = dc.Softmax().forward(x)
    e = np.exp(x)
    assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-12)


def test_softmax_large_logits_are_stable() -> None:
    x = np.array([[1000.0, 1001.0, 999.0]])
    y = dc.Softmax().forward(x)
    e = np.exp(x - 1000.0)
    assert_allclose(y, e / e.sum(), rtol=1e-12)
    check(dc.Softmax(), x)


# -- a whole model ----------------------------------------------------------------------

def test_sequential_chain_rule_matches_finite_differences() -> None:
    """Gradient of a loss through a small float64 CNN, w.r.t. every parameter and the input."""
    from dualconv.testing import numerical_gradient

    model = dc.Sequential([
        dc.Conv2D(None, 3, 3, padding=1), dc.Tanh(), dc.AvgPool2D(2),
        dc.Conv2D(None, 2, (2, 1)), dc.Sigmoid(), dc.Flatten(), dc.Dense(None, 3),
    ], seed=0, dtype=np.float64)
    x = randn((2, 1, 6, 6), 26)
    labels = np.array([2, 0])
    loss = dc.SoftmaxCrossEntropy()

    def f() -> float:
        return float(loss.forward(model.forward(x), labels))

    f()
    gx = model.backward(loss.backward())
    analytic = {p.name: p.grad.copy() for p in model.parameters()}
    assert_allclose(gx, numerical_gradient(f, x), rtol=RTOL, atol=ATOL)
    for p in model.parameters():
        assert_allclose(analytic[p.name], numerical_gradient(f, p.data), rtol=RTOL, atol=ATOL,
                        err_msg=p.name)


@pytest.mark.parametrize("make, shape", [
    (lambda: dc.Conv2D(2, 3, 3, padding=1), (2, 2, 4, 5)),
    (lambda: dc.Dense(4, 3), (3, 4)),
    (dc.Tanh, (2, 3)),
    (lambda: dc.MaxPool2D(2), (1, 2, 4, 4)),
], ids=["Conv2D", "Dense", "Tanh", "MaxPool2D"])
def test_backward_without_input_grad(make, shape) -> None:
    """backward(gy, input_grad=False) returns None and the same parameter gradients;
    the next plain backward computes gx again."""
    layer = make().astype(np.float64)
    x = tie_free(shape, 27)
    y = layer.forward(x)
    gy = randn(y.shape, 28)
    gx_full = layer.backward(gy)
    full = {k: v.copy() for k, v in layer.grads.items()}
    assert layer.backward(gy, input_grad=False) is None
    for k, v in full.items():
        assert_array_equal(layer.grads[k], v)
    assert_array_equal(layer.backward(gy), gx_full)
    check(layer, x)


def test_sequential_backward_without_input_grad() -> None:
    model = dc.Sequential([dc.Conv2D(None, 2, 3), dc.ReLU(), dc.Flatten(), dc.Dense(None, 2)],
                          seed=0, dtype=np.float64)
    x = randn((2, 1, 5, 5), 29)
    gy = randn((2, 2), 30)
    model.forward(x)
    assert model.backward(gy).shape == x.shape
    full = {p.name: p.grad.copy() for p in model.parameters()}
    assert model.backward(gy, input_grad=False) is None
    for p in model.parameters():
        assert_array_equal(p.grad, full[p.name], err_msg=p.name)
