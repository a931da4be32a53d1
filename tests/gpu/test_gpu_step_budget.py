"""What a LeNet step asks of the GPU, counted by the emulated CuPy: the budgets
of the batch-last kernels, fused updates and fused loss (benchmarks/gpu_counters.py
prints the same figures; the asv suite tracks them)."""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from dualconv.models import lenet

pytestmark = pytest.mark.gpu

LAUNCH_BUDGET = {"sgd": 64, "adam": 72}
"""Kernel launches per LeNet training step at batch 64, inside Trainer.fit too."""
COPY_BUDGET = 1 << 20
"""Device-to-device copy bytes per LeNet step at batch 256."""


def _resident_trainer(emu, optimizer: str, batch: int, steps: int):
    """(trainer, device batches): LeNet on the emulated GPU, its data already there."""
    cupy = emu.cupy
    rng = np.random.default_rng(0)
    X = cupy.asarray(rng.random((batch * steps, 1, 28, 28), dtype=np.float32))
    y = cupy.asarray(rng.integers(0, 10, batch * steps))
    model = lenet(seed=0)
    model.to("cupy")
    opt = (dc.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else dc.Adam(model.parameters(), lr=1e-3))
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, progress=False)
    trainer.loss.check_labels = False  # as inside fit, which checks every label once up front
    return trainer, [(X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
                     for i in range(steps)]


def _counted_step(emu, trainer, batches) -> dict[str, int]:
    """Counters of the last step, after the earlier ones built layers and optimizer state."""
    for xb, yb in batches[:-1]:
        trainer.train_step(xb, yb)
    emu.reset_counters()
    trainer.train_step(*batches[-1])
    return dict(emu.counters)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_lenet_step_at_batch_64_stays_within_its_launch_budget(emu, optimizer):
    counts = _counted_step(emu, *_resident_trainer(emu, optimizer, 64, 3))
    assert 0 < counts["kernel_launches"] <= LAUNCH_BUDGET[optimizer], counts
    assert counts["syncs"] == counts["host_to_device"] == counts["device_to_host"] == 0, counts


def _counted_fit_step(emu, trainer, batches) -> dict[str, float]:
    """Counters of one step inside Trainer.fit: fits of 2 and of 4 batches after a
    warm-up fit, their difference halved (what a fit pays once cancels), with the
    running loss read only at the end of the epoch."""
    cupy = emu.cupy
    X = cupy.concatenate([xb for xb, _ in batches])
    y = cupy.concatenate([yb for _, yb in batches])
    batch = len(batches[0][1])
    trainer.log_every = len(batches)
    trainer.fit(X[:2 * batch], y[:2 * batch], batch_size=batch, seed=0)
    counts = []
    for n in (2, 4):
        emu.reset_counters()
        trainer.fit(X[:n * batch], y[:n * batch], batch_size=batch, seed=0)
        counts.append(dict(emu.counters))
    return {k: (counts[1][k] - counts[0][k]) / 2 for k in counts[0]}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_lenet_step_inside_fit_stays_within_its_launch_budget(emu, optimizer):
    """fit adds the batch gather, the running sums and the divergence guard (one loss
    check; the guarded updates replace the plain ones) to train_step's launches."""
    counts = _counted_fit_step(emu, *_resident_trainer(emu, optimizer, 64, 4))
    assert 0 < counts["kernel_launches"] <= LAUNCH_BUDGET[optimizer], counts
    assert counts["syncs"] == counts["host_to_device"] == counts["device_to_host"] == 0, counts
    # the last-good copy is written by the update kernels: no copy beyond train_step's own
    alone = _counted_step(emu, *_resident_trainer(emu, optimizer, 64, 3))
    assert counts["copy_bytes"] == alone["copy_bytes"], (counts, alone)


def test_a_lenet_step_at_batch_256_copies_at_most_a_megabyte(emu):
    counts = _counted_step(emu, *_resident_trainer(emu, "sgd", 256, 2))
    assert counts["copy_bytes"] <= COPY_BUDGET, counts


def test_evaluate_on_resident_data_does_not_sync_per_batch(emu):
    trainer, batches = _resident_trainer(emu, "sgd", 32, 8)
    X = emu.cupy.concatenate([xb for xb, _ in batches])
    y = emu.cupy.concatenate([yb for _, yb in batches])
    syncs = []
    for n in (64, 256):  # 2 batches, then 8
        emu.reset_counters()
        trainer.evaluate(X[:n], y[:n], batch_size=32)
        syncs.append(emu.counters["syncs"])
    assert syncs[0] == syncs[1], syncs
