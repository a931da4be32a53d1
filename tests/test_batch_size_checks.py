"""Every method that takes a batch_size checks it the same way as fit: an integer
>= 1, else an error naming the method and the value (never zeros or a bare range error)."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc

X = np.random.default_rng(0).standard_normal((10, 1, 4, 4)).astype(np.float32)
Y = np.arange(10) % 3
BAD = [(0, ValueError, "must be >= 1, got 0"), (-1, ValueError, "must be >= 1, got -1"),
       (1.5, TypeError, "must be an integer, got 1.5"), (True, TypeError, "must be an integer, got True")]


def model() -> dc.Sequential:
    return dc.Sequential([dc.Flatten(), dc.Dense(None, 3)], seed=0)


@pytest.mark.parametrize("batch_size, error, message", BAD)
@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_trainer_methods_reject_a_bad_batch_size(method, batch_size, error, message):
    m = model()
    trainer = dc.Trainer(m, dc.SoftmaxCrossEntropy(), dc.SGD(m.parameters(), lr=0.1), progress=False)
    with pytest.raises(error, match=f"^Trainer.{method}: batch_size {message}$"):
        getattr(trainer, method)(X, Y, batch_size=batch_size)


@pytest.mark.parametrize("batch_size, error, message", BAD)
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_classes"])
def test_sequential_predictions_reject_a_bad_batch_size(method, batch_size, error, message):
    with pytest.raises(error, match=f"^Sequential.{method}: batch_size {message}$"):
        getattr(model(), method)(X, batch_size=batch_size)


def test_numpy_integer_batch_sizes_are_accepted():
    m = model()
    assert_array_equal(m.predict(X, batch_size=np.int64(3)), m.predict(X, batch_size=10))
    result = dc.Trainer(m, dc.SoftmaxCrossEntropy()).evaluate(X, Y, batch_size=np.int32(4))
    predicted = m.predict_classes(X)
    assert result["accuracy"] == np.mean(predicted == Y) and np.isfinite(result["loss"])
