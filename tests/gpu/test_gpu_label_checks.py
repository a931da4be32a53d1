"""SoftmaxCrossEntropy checks label ranges on the device: a standalone train_step reads
nothing back, and ``verify_labels()`` (or the next fit / evaluate) raises the error that
NumPy's forward raises at once (tests/test_bad_input.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import dualconv as dc
from dualconv.backend import to_backend
from dualconv.models import lenet
from digits_28 import digits_28

pytestmark = pytest.mark.gpu


def _trainer(optimizer: str) -> dc.Trainer:
    model = lenet(seed=0)
    model.build((1, 1, 28, 28))
    model.to("cupy")
    opt = (dc.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else dc.Adam(model.parameters(), lr=1e-3))
    return dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, progress=False)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_standalone_train_step_on_resident_data_transfers_and_syncs_nothing(emu, optimizer):
    X, y = digits_28(64 * 3, seed=0)
    trainer = _trainer(optimizer)
    X, y = to_backend(X, "cupy"), to_backend(y, "cupy")
    assert trainer.loss.check_labels  # on, as outside fit
    for i in range(3):
        before = dict(emu.counters)
        loss, correct = trainer.train_step(X[i * 64:(i + 1) * 64], y[i * 64:(i + 1) * 64])
        moved = {k: emu.counters[k] - before[k] for k in ("host_to_device", "device_to_host", "syncs")}
        assert moved == {"host_to_device": 0, "device_to_host": 0, "syncs": 0}, (i, moved)
    assert math.isfinite(float(loss))
    trainer.loss.verify_labels()  # good labels: nothing to raise


def test_a_bad_label_is_raised_by_verify_labels_as_numpy_raises_it(emu):
    X, y = digits_28(32, seed=1)
    trainer = _trainer("sgd")
    y = y.copy()
    y[5] = 10
    with pytest.raises(ValueError) as on_cpu:
        dc.SoftmaxCrossEntropy().forward(np.zeros((32, 10), np.float32), y)
    before = emu.counters["syncs"]
    loss, _ = trainer.train_step(to_backend(X, "cupy"), to_backend(y, "cupy"))
    assert emu.counters["syncs"] == before
    assert math.isnan(float(loss))  # the bad row's loss is NaN
    with pytest.raises(ValueError) as on_gpu:
        trainer.loss.verify_labels()
    assert str(on_gpu.value) == str(on_cpu.value) == (
        "SoftmaxCrossEntropy: labels must be in [0, 10), got values from 0 to 10")
    trainer.loss.verify_labels()  # raised once: nothing is pending any more


def test_the_error_covers_every_forward_since_the_last_verify(emu):
    import cupy

    loss = dc.SoftmaxCrossEntropy()
    z = cupy.zeros((3, 4), cupy.float32)
    for labels in ([0, 1, 2], [-1, 3, 0], [2, 2, 5]):
        loss.forward(z, cupy.asarray(labels))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\), got values from -1 to 5"):
        loss.verify_labels()
    loss.forward(cupy.zeros((2, 3), cupy.float32), cupy.asarray([0, 2]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\), got values from 0 to 7"):
        loss.forward(cupy.zeros((2, 6), cupy.float32), cupy.asarray([7, 0]))  # flushes [0, 3)'s
        loss.verify_labels()


@pytest.mark.parametrize("then", ["fit", "evaluate"])
def test_fit_and_evaluate_raise_a_pending_label_error_before_they_start(emu, then):
    X, y = digits_28(32, seed=2)
    trainer = _trainer("sgd")
    bad = y.copy()
    bad[0] = -3
    trainer.train_step(to_backend(X, "cupy"), to_backend(bad, "cupy"))
    weights = trainer.model.state_dict()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\), got values from -3 to"):
        getattr(trainer, then)(X, y)
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, weights[name])
