"""A layer checks an input of a signature it accepted before only for its backend
(base.Layer.forward): what changes the outcome of the other checks (a cast, a build)
makes it check every input again, and a rejected input is never remembered. Oracle:
the error a fresh layer in the same state raises for the same input."""
from __future__ import annotations

import re

import numpy as np
import pytest

import dualconv as dc
from dualconv.testing import emulated_cupy

F32 = np.float32


def error_of(call) -> tuple[type, str]:
    with pytest.raises(Exception) as caught:
        call()
    return type(caught.value), str(caught.value)


def test_a_cast_makes_a_seen_input_checked_again() -> None:
    x = np.zeros((2, 1, 6, 6), F32)
    conv = dc.Conv2D(1, 2, 3)
    conv.forward(x)  # float32, accepted and remembered
    conv.astype(np.float64)
    fresh = dc.Conv2D(1, 2, 3).astype(np.float64)
    expected = error_of(lambda: fresh.forward(x))
    assert expected[0] is TypeError and "expected float64 input" in expected[1]
    assert error_of(lambda: conv.forward(x)) == expected


def test_a_rejected_input_is_rejected_every_time() -> None:
    conv = dc.Conv2D(1, 2, 3)
    bad, good = np.zeros((2, 3, 6, 6), F32), np.zeros((2, 1, 6, 6), F32)
    first = error_of(lambda: conv.forward(bad))
    assert first[0] is ValueError and "expected 1 input channels, got 3" in first[1]
    conv.forward(good)
    assert error_of(lambda: conv.forward(bad)) == first


def test_a_lazy_layer_checks_what_its_build_fixed() -> None:
    dense = dc.Dense(None, 2)
    dense.forward(np.zeros((4, 3), F32))  # builds: 3 input features
    wrong = np.zeros((4, 5), F32)
    expected = error_of(lambda: dc.Dense(3, 2).forward(wrong))
    assert expected[0] is ValueError and "expected 3 input features" in expected[1]
    assert error_of(lambda: dense.forward(wrong)) == expected


def test_a_seen_input_is_still_checked_for_its_backend() -> None:
    x = np.zeros((2, 1, 6, 6), F32)
    conv = dc.Conv2D(1, 2, 3)
    conv.forward(x)
    with emulated_cupy():
        conv.to("cupy")
        kind, message = error_of(lambda: conv.forward(x))
    assert kind is TypeError
    assert re.search(r"Conv2D: expected all arrays on the same backend, but the input is a numpy "
                     r"array and the parameters are on cupy", message)


@pytest.mark.parametrize("make, x", [
    (lambda: dc.Conv2D(1, 2, 3), np.zeros((2, 1, 6, 6), F32)),
    (lambda: dc.MaxPool2D(2), np.zeros((2, 1, 6, 6), F32)),
    (lambda: dc.Flatten(), np.zeros((2, 1, 6, 6), F32)),
], ids=["conv", "maxpool", "flatten"])
def test_backward_checks_the_gradient_shape_every_step(make, x) -> None:
    layer = make()
    y = layer.forward(x)
    layer.backward(np.ones_like(y))  # the output shape of x's shape, now remembered
    layer.forward(x)
    wrong = np.ones((y.shape[0] + 1, *y.shape[1:]), F32)
    kind, message = error_of(lambda: layer.backward(wrong))
    assert kind is ValueError
    assert f"{layer.name}.backward: expected a gradient of shape {tuple(y.shape)}" in message
