"""dualconv.testing catches wrong gradients and passes right ones."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from dualconv.testing import check_layer_gradients, check_loss_gradients, numerical_gradient


class ToyLinear:
    """y = x @ weight + bias; x: (N, D), weight: (D, M), bias: (M,) -> y: (N, M).

    ``mistake`` plants one bug: "gx" (gx doubled), "weight" (grad of the first
    sample only, not summed over the batch), "bias" (mean over the batch
    instead of the sum).
    """

    def __init__(self, D: int, M: int, mistake: str | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params = {"weight": rng.standard_normal((D, M)), "bias": rng.standard_normal(M)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.mistake = mistake
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["weight"] + self.params["bias"]

    def backward(self, gy: np.ndarray) -> np.ndarray:
        x = self.x
        self.grads["weight"][...] = (x[:1].T @ gy[:1]) if self.mistake == "weight" else x.T @ gy
        self.grads["bias"][...] = gy.mean(0) if self.mistake == "bias" else gy.sum(0)
        gx = gy @ self.params["weight"].T
        return 2 * gx if self.mistake == "gx" else gx


class ToyTanh:
    """y = tanh(x), no parameters; ``wrong`` uses 1 - y instead of 1 - y**2."""

    def __init__(self, wrong: bool = False) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.wrong = wrong

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = np.tanh(x)
        return self.y

    def backward(self, gy: np.ndarray) -> np.ndarray:
        return gy * (1 - self.y if self.wrong else 1 - self.y ** 2)


class ToySoftmaxCrossEntropy:
    """Mean over the batch of -log softmax(pred)[target]; pred: (N, K), target: (N,).

    ``wrong`` forgets to divide the gradient by N: the loss/gradient mismatch
    that published from-scratch code has shipped in its own form.
    """

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        z = pred - pred.max(1, keepdims=True)
        self.p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        self.target = target
        return float(-np.log(self.p[np.arange(len(target)), target]).mean())

    def backward(self) -> np.ndarray:
        N = len(self.target)
        d = self.p.copy()
        d[np.arange(N), self.target] -= 1
        return d if self.wrong else d / N


def test_numerical_gradient_of_a_known_function_restores_x() -> None:
    x = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]])
    before = x.copy()
    g = numerical_gradient(lambda: (x ** 3).sum(), x)
    assert_allclose(g, 3 * before ** 2, rtol=1e-8, atol=1e-8)
    assert_array_equal(x, before)


def test_numerical_gradient_restores_x_when_f_raises() -> None:
    x = np.ones(3)

    def f() -> float:
        if x[0] != 1.0:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    assert_array_equal(x, np.ones(3))


def test_correct_layer_passes_and_is_left_unchanged() -> None:
    layer = ToyLinear(4, 3)
    x = np.random.default_rng(1).standard_normal((5, 4))
    x_before = x.copy()
    params_before = {k: v.copy() for k, v in layer.params.items()}
    check_layer_gradients(layer, x)
    assert_array_equal(x, x_before)
    for k, v in params_before.items():
        assert_array_equal(layer.params[k], v)


def test_correct_parameterless_layer_passes() -> None:
    check_layer_gradients(ToyTanh(), np.random.default_rng(2).standard_normal((3, 4)))


@pytest.mark.parametrize("mistake, named", [
    ("gx", "the input x"),
    ("weight", "params['weight']"),
    ("bias", "params['bias']"),
])
def test_wrong_layer_gradient_is_caught_and_named(mistake: str, named: str) -> None:
    layer = ToyLinear(4, 3, mistake=mistake)
    x = np.random.default_rng(1).standard_normal((5, 4))
    with pytest.raises(AssertionError, match="ToyLinear") as info:
        check_layer_gradients(layer, x)
    assert named in str(info.value)


def test_wrong_parameterless_layer_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"ToyTanh: gradient of the input x"):
        check_layer_gradients(ToyTanh(wrong=True), np.random.default_rng(2).standard_normal((3, 4)))


def test_float32_is_refused() -> None:
    x = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        check_layer_gradients(ToyLinear(4, 3), x)


class ToyLinearForgetsBiasGrad(ToyLinear):
    """A layer whose backward leaves grads without the bias entry."""

    def backward(self, gy):
        gx = super().backward(gy)
        del self.grads["bias"]
        return gx


def test_mismatched_params_and_grads_keys_are_reported() -> None:
    layer = ToyLinearForgetsBiasGrad(4, 3)
    with pytest.raises(AssertionError, match="ToyLinearForgetsBiasGrad: params has keys"):
        check_layer_gradients(layer, np.ones((2, 4)))


def test_loss_check_passes_a_right_loss_and_catches_a_wrong_one() -> None:
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((6, 4))
    target = rng.integers(0, 4, size=6)
    check_loss_gradients(ToySoftmaxCrossEntropy(), pred, target)
    with pytest.raises(AssertionError, match=r"ToySoftmaxCrossEntropy: gradient of pred"):
        check_loss_gradients(ToySoftmaxCrossEntropy(wrong=True), pred, target)
