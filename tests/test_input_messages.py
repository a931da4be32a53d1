"""Errors about the user's input name the user's shape and argument, and hint at a
channels-last batch."""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from dualconv.models import lenet


def _trainer(model: dc.Sequential) -> dc.Trainer:
    return dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.01), progress=False)


def test_a_shape_error_names_the_users_shape_not_a_probe() -> None:
    X = np.zeros((128, 28, 28), np.float32)  # the channel axis missing
    with pytest.raises(ValueError, match=r"Trainer.fit: X of shape \(128, 28, 28\) does not fit the model: "
                                         r".*got shape \(128, 28, 28\)"):
        _trainer(lenet(seed=0)).fit(X, np.zeros(128, np.int64))


def test_a_badly_shaped_validation_set_is_named() -> None:
    X = np.zeros((16, 1, 28, 28), np.float32)
    bad = np.zeros((8, 1, 20, 28), np.float32)
    with pytest.raises(ValueError, match=r"Trainer.fit\(validation_data\): X of shape \(8, 1, 20, 28\)"):
        _trainer(lenet(seed=0)).fit(X, np.zeros(16, np.int64), validation_data=(bad, np.zeros(8, np.int64)))


def test_a_channels_last_batch_gets_a_hint() -> None:
    X = np.zeros((16, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=r"looks channels-last, \(N, H, W, C\); dualconv takes \(N, C, H, W\): "
                                         r"pass x.transpose\(0, 3, 1, 2\)"):
        lenet(seed=0).predict(X)
    lazy = dc.Sequential([dc.Conv2D(None, 4, 3), dc.MaxPool2D(2), dc.Flatten(), dc.Dense(None, 10)], seed=0)
    with pytest.raises(ValueError, match="MaxPool2D.*looks channels-last"):
        lazy.forward(np.zeros((2, 28, 28, 3), np.float32))
