"""What a LeNet training step asks of the GPU, counted by the emulated CuPy (no GPU needed).

    python benchmarks/gpu_counters.py

Runs LeNet with MNIST-shaped data resident on the (emulated) device under
``dualconv.testing.emulated_cupy()`` and reports, per training step, the
counters a GPU pays for: kernel launches, device-to-device copy bytes, host
transfers and syncs (dualconv/testing/fake_cupy/_counters.py says what each
counts), and the syncs of one ``Trainer.evaluate`` call. It counts a bare
``Trainer.train_step`` and a step inside ``Trainer.fit``, which adds the batch
gather, the running sums and the divergence guard (dualconv/divergence.py). The
asv suite tracks the same figures (bench_gpu_counters.py), so a regression shows
in CI's quick run.

Goals (issue: "The GPU step does only the work it must"): at batch 64, at most
64 launches per SGD-momentum step and 72 per Adam step, inside fit too; at batch
256, at most 1 MB of device-to-device copies per step; no sync and no transfer
inside a step.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

try:
    import dualconv  # noqa: F401
except ImportError:  # run from a checkout without dualconv installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dualconv as dc
from dualconv.models import lenet
from dualconv.testing import emulated_cupy

WARMUP_STEPS = 2
"""Steps before counting: lazy layer shapes, optimizer state, kernel compiles."""


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _optimizer(name: str, model: Any) -> dc.Optimizer:
    if name == "sgd-momentum":
        return dc.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if name == "adam":
        return dc.Adam(model.parameters(), lr=1e-3)
    raise ValueError(f"optimizer must be 'sgd-momentum' or 'adam', got {name!r}")


def step_counters(optimizer: str = "sgd-momentum", batch: int = 64,
                  steps: int = 3) -> dict[str, float]:
    """Counters per training step of LeNet, data resident on the device (mean of ``steps``)."""
    with emulated_cupy() as emu:
        cupy = emu.cupy
        X, y = _data(batch * (steps + WARMUP_STEPS))
        Xd, yd = cupy.asarray(X), cupy.asarray(y)
        model = lenet(seed=0)
        model.to("cupy")
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), _optimizer(optimizer, model),
                             progress=False)
        trainer.loss.check_labels = False  # as Trainer.fit does after its one check up front
        for i in range(WARMUP_STEPS):
            trainer.train_step(Xd[i * batch:(i + 1) * batch], yd[i * batch:(i + 1) * batch])
        emu.reset_counters()
        for i in range(WARMUP_STEPS, WARMUP_STEPS + steps):
            trainer.train_step(Xd[i * batch:(i + 1) * batch], yd[i * batch:(i + 1) * batch])
        return {k: v / steps for k, v in emu.counters.items()}


def fit_step_counters(optimizer: str = "sgd-momentum", batch: int = 64,
                      steps: int = 3) -> dict[str, float]:
    """Counters per step inside ``Trainer.fit`` (batch gather, running sums and the
    divergence guard included), data resident on the device.

    Two fits of one epoch, of ``steps`` and ``2 * steps`` batches, with ``log_every``
    past the epoch's end: their difference over ``steps`` is the cost of one step,
    without what each fit pays once (its shuffle order, the guard's setup, the epoch's
    reads of the running loss).
    """
    with emulated_cupy() as emu:
        cupy = emu.cupy
        X, y = _data(batch * 2 * steps)
        Xd, yd = cupy.asarray(X), cupy.asarray(y)
        model = lenet(seed=0)
        model.to("cupy")
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), _optimizer(optimizer, model),
                             progress=False, log_every=4 * steps)
        trainer.fit(Xd[:batch * WARMUP_STEPS], yd[:batch * WARMUP_STEPS], batch_size=batch, seed=0)
        counted = []
        for n in (steps, 2 * steps):
            emu.reset_counters()
            trainer.fit(Xd[:batch * n], yd[:batch * n], batch_size=batch, seed=0)
            counted.append(dict(emu.counters))
        return {k: (counted[1][k] - counted[0][k]) / steps for k in counted[0]}


def evaluate_syncs(batches: int = 4, batch: int = 64) -> int:
    """Syncs of one Trainer.evaluate over ``batches`` batches of resident data."""
    with emulated_cupy() as emu:
        cupy = emu.cupy
        X, y = _data(batch * batches)
        model = lenet(seed=0)
        model.to("cupy")
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                             dc.SGD(model.parameters(), lr=0.01), progress=False)
        Xd, yd = cupy.asarray(X), cupy.asarray(y)
        trainer.evaluate(Xd[:batch], yd[:batch], batch_size=batch)  # build, compile
        emu.reset_counters()
        trainer.evaluate(Xd, yd, batch_size=batch)
        return emu.counters["syncs"]


def report() -> dict[str, float]:
    """Every figure the issue's goals name."""
    sgd = step_counters("sgd-momentum", 64)
    adam = step_counters("adam", 64)
    big = step_counters("sgd-momentum", 256)
    fit_sgd = fit_step_counters("sgd-momentum", 64)
    fit_adam = fit_step_counters("adam", 64)
    every = (sgd, adam, big, fit_sgd, fit_adam)
    return {
        "launches per SGD-momentum step, batch 64 (goal <= 64)": sgd["kernel_launches"],
        "launches per Adam step, batch 64 (goal <= 72)": adam["kernel_launches"],
        "launches per SGD-momentum step inside fit, batch 64 (goal <= 64)":
            fit_sgd["kernel_launches"],
        "launches per Adam step inside fit, batch 64 (goal <= 72)": fit_adam["kernel_launches"],
        "device-to-device copy bytes per step, batch 256 (goal <= 1 MB)": big["copy_bytes"],
        "device-to-device copy bytes per step inside fit, batch 64, SGD momentum plus Adam":
            fit_sgd["copy_bytes"] + fit_adam["copy_bytes"],
        "syncs per step (goal 0)": sum(c["syncs"] for c in every),
        "transfers per step (goal 0)": sum(c["host_to_device"] + c["device_to_host"]
                                           for c in every),
        "syncs of evaluate over 4 batches": evaluate_syncs(4),
    }


def main() -> int:
    for name, value in report().items():
        print(f"{value:>12,.0f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
