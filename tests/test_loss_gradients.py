"""Finite-difference gradient checks, in float64, of every loss, and its value
against the formula written out in NumPy.

Each loss's backward (dL/dpred) is compared with central differences of
loss.forward(pred, target) (see dualconv.testing.check_loss_gradients), with
the tolerances derived in gradient_checks.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import dualconv as dc
from dualconv.testing import check_loss_gradients
from gradient_checks import ATOL, RTOL, randn


def test_softmax_cross_entropy_int_labels() -> None:
    pred = 2 * randn((5, 4), 19)
    target = np.array([0, 3, 1, 1, 2])
    loss = dc.SoftmaxCrossEntropy()
    check_loss_gradients(loss, pred, target, rtol=RTOL, atol=ATOL)
    logp = pred - np.log(np.exp(pred).sum(axis=1, keepdims=True))
    assert float(loss.forward(pred, target)) == pytest.approx(-logp[np.arange(5), target].mean(), rel=1e-12)


def test_softmax_cross_entropy_one_hot_and_soft_targets() -> None:
    pred = 2 * randn((5, 4), 20)
    labels = np.array([2, 0, 3, 1, 2])
    onehot = np.eye(4)[labels]
    loss = dc.SoftmaxCrossEntropy()
    check_loss_gradients(loss, pred, onehot, rtol=RTOL, atol=ATOL)
    assert float(loss.forward(pred, onehot)) == pytest.approx(float(loss.forward(pred, labels)), rel=1e-12)
    soft = np.abs(randn((5, 4), 21))
    soft /= soft.sum(axis=1, keepdims=True)
    check_loss_gradients(loss, pred, soft, rtol=RTOL, atol=ATOL)
    logp = pred - np.log(np.exp(pred).sum(axis=1, keepdims=True))
    assert float(loss.forward(pred, soft)) == pytest.approx(-(soft * logp).sum() / 5, rel=1e-12)


def test_binary_cross_entropy_probabilities() -> None:
    rng = np.random.default_rng(22)
    pred = rng.uniform(0.05, 0.95, size=(4, 3))
    target = rng.integers(0, 2, size=(4, 3)).astype(np.float64)
    target[0, 0] = 0.3  # soft targets are allowed too
    loss = dc.BinaryCrossEntropy()
    check_loss_gradients(loss, pred, target, rtol=RTOL, atol=ATOL)
    expected = -(target * np.log(pred) + (1 - target) * np.log(1 - pred)).mean()
    assert float(loss.forward(pred, target)) == pytest.approx(expected, rel=1e-12)


def test_binary_cross_entropy_from_logits() -> None:
    rng = np.random.default_rng(23)
    pred = 3 * rng.standard_normal((4, 3))
    target = rng.integers(0, 2, size=(4, 3)).astype(np.float64)
    loss = dc.BinaryCrossEntropy(from_logits=True)
    check_loss_gradients(loss, pred, target, rtol=RTOL, atol=ATOL)
    p = 1 / (1 + np.exp(-pred))
    expected = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean()
    assert float(loss.forward(pred, target)) == pytest.approx(expected, rel=1e-10)


def test_binary_cross_entropy_from_logits_is_stable_for_large_logits() -> None:
    pred = np.array([[800.0, -800.0]])
    target = np.array([[0.0, 1.0]])
    loss = dc.BinaryCrossEntropy(from_logits=True)
    assert float(loss.forward(pred, target)) == pytest.approx(800.0, rel=1e-12)
    assert_allclose(loss.backward(), [[0.5, -0.5]], rtol=1e-12)  # (sigmoid - t) / 2


def test_mean_squared_error() -> None:
    pred = randn((3, 4), 24)
    target = randn((3, 4), 25)
    loss = dc.MeanSquaredError()
    check_loss_gradients(loss, pred, target, rtol=RTOL, atol=ATOL)
    assert float(loss.forward(pred, target)) == pytest.approx(((pred - target) ** 2).mean(), rel=1e-12)
