"""A last batch of one sample: BatchNorm needs two for its batch statistics, so that
sample joins the batch before it (Trainer.fit, and so the estimator and the CLI)."""
from __future__ import annotations

import numpy as np

import dualconv as dc
from dualconv.models import lenet, lenet_bn
from dualconv.sklearn import CNNClassifier
from dualconv.trainer import batch_starts


def test_a_last_sample_alone_joins_the_batch_before_it_where_a_layer_couples_samples() -> None:
    bn, plain = lenet_bn(seed=0).train(), lenet(seed=0).train()
    assert batch_starts(33, 32, bn) == [0]
    assert batch_starts(65, 32, bn) == [0, 32]
    assert batch_starts(66, 32, bn) == [0, 32, 64]  # two samples: a batch of its own
    assert batch_starts(1, 32, bn) == [0]
    assert batch_starts(33, 32, plain) == [0, 32]  # no layer couples samples: as given


def test_lenet_bn_trains_on_a_dataset_whose_last_batch_is_one_sample() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((33, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 33)
    model = lenet_bn(seed=0)
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.01), progress=False)
    history = trainer.fit(X, y, epochs=1, batch_size=32, seed=0)
    assert np.isfinite(history["loss"][0])
    clf = CNNClassifier(model="lenet-bn", epochs=1, batch_size=32, random_state=0)
    assert clf.fit(X, y).predict(X).shape == (33,)


def test_integer_pixels_are_refused_with_the_scale_to_use() -> None:
    """Raw 8-bit pixels would train on values 255 times too large, silently."""
    import pytest
    X = np.random.default_rng(1).integers(0, 256, (8, 1, 28, 28)).astype(np.uint8)
    model = lenet(seed=0)
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.01), progress=False)
    with pytest.raises(TypeError, match=r"Trainer.fit: X holds uint8 values, not floats.*X.astype\(np.float32\) / 255"):
        trainer.fit(X, np.zeros(8, np.int64))
    with pytest.raises(TypeError, match="Trainer.evaluate: X holds uint8 values"):
        trainer.evaluate(X, np.zeros(8, np.int64))
