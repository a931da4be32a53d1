"""fit's divergence guard also keeps the buffers (BatchNorm's running statistics),
which the forward pass writes and no optimizer kernel does.

Oracle, as in test_divergence.py: a second LeNet-BN trainer that trains only on the
batches before the bad one (same seed, so the same dropout masks); its weights,
buffers and optimizer state must equal, bitwise, what the failed fit left behind.
"""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from dualconv.divergence import TrainingDiverged
from dualconv.models import lenet_bn
from test_divergence import assert_same_state

BATCH = 4
X = np.random.default_rng(1).random((5 * BATCH, 1, 28, 28), dtype=np.float32)
Y = np.arange(5 * BATCH) % 10


def bn_trainer(optimizer: str, log_every: int = 20) -> dc.Trainer:
    model = lenet_bn(seed=0)
    opt = (dc.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else dc.Adam(model.parameters(), lr=1e-3))
    return dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, progress=False, log_every=log_every)


def failed_and_reference(optimizer: str, log_every: int, bad_step: int) -> tuple[dc.Trainer, dc.Trainer]:
    """(a LeNet-BN trainer whose fit met a NaN image at step bad_step, one trained on the steps before)."""
    Xn = X.copy()
    Xn[(bad_step - 1) * BATCH + 1, 0, 5, 7] = np.nan
    failed = bn_trainer(optimizer, log_every)
    with pytest.raises(TrainingDiverged, match=f"the loss became nan at epoch 1, step {bad_step} "):
        failed.fit(Xn, Y, epochs=1, batch_size=BATCH, shuffle=False, seed=0)
    reference = bn_trainer(optimizer)
    reference.model.build((1, 1, 28, 28))
    if bad_step > 1:
        reference.fit(X[:(bad_step - 1) * BATCH], Y[:(bad_step - 1) * BATCH], epochs=1, batch_size=BATCH,
                      shuffle=False, seed=0)
    return failed, reference


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("log_every", [1, 20])
@pytest.mark.parametrize("bad_step", [1, 3])
def test_a_nan_image_leaves_the_running_statistics_of_the_last_finite_step(optimizer, log_every, bad_step):
    failed, reference = failed_and_reference(optimizer, log_every, bad_step)
    buffers = failed.model.buffers()
    assert len(buffers) == 6  # running mean and variance of the three BatchNorms
    for name, (layer, key) in buffers.items():
        assert np.isfinite(layer.buffers[key]).all(), name
    assert_same_state(failed, reference)  # the state dicts hold the buffers too
    assert np.isfinite(failed.evaluate(X, Y)["loss"])
