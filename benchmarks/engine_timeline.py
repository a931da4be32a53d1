"""Where a training step's time goes on the CPU engine: the caller's and the worker's events on one clock.

    python benchmarks/engine_timeline.py [--model lenet] [--batch 64] [--steps 200]
    python benchmarks/engine_timeline.py --recipe fast [--steps 200]

LeNet (or ``--model``) trains on random MNIST-shaped data through ``Trainer.train_step``
with the engine on two cores. Each step records, in the calling process and in the
worker process, when these begin and end: the worker call's packing and sending
(``start``), the caller's own share (``own``), waiting for and reading the answer
(``finish``), the loss's forward, the optimizer's step, and in the worker its forward and
backward share and its packing of the answer. Both processes read time.perf_counter,
the same monotonic clock, so the events line up. The report is each event's median
offset from the step's start, in microseconds, in order: the gaps between the kernels'
shares are the engine's cost around them (benchmarks/README.md, "A worker keeps what it
unpickled", reads one). The instrumentation itself costs a few microseconds an event.

``--recipe NAME`` records ``Trainer.fit`` instead, as ``dualconv train --model NAME`` trains
(the model's TRAINING_DEFAULTS: its batch, optimizer, schedule, shifts and divergence
guard; ``--model`` and ``--batch`` are then not used), on random MNIST-shaped images: a
step then starts where fit's guard begins it, and its events add ``train_step``, the
model's forward and backward, and, where the recipe has them, the batch's shift
(``C shift``) and a schedule stepped per batch (benchmarks/README.md, "Where a `fit` step
goes"). A model with BatchNorm in training runs whole, with no worker events.
"""
from __future__ import annotations

import argparse
import collections
import functools
import mmap
import os
import statistics
import sys
import time
from typing import Any

try:
    import dualconv  # noqa: F401
except ImportError:  # run from a checkout without dualconv installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

import dualconv as dc
from dualconv import augment, divergence, recipe, runs
from dualconv.engine import arena, passes, workers
from dualconv.models import MODELS, TRAINING_DEFAULTS

Event = tuple[str, float]  # ("C name<" or "W name>", perf_counter seconds)


class _Recorder:
    """Events of the caller and of its worker, each process writing its own half of a
    shared mapping made before the worker is forked: (label's index, time) rows after a
    count."""

    def __init__(self, capacity: int) -> None:
        self.caller, self.labels = os.getpid(), []
        self.wrapped: list[tuple[Any, str, Any]] = []  # (owner, name, the original), to put back
        shared = np.frombuffer(mmap.mmap(-1, 2 * 8 * (1 + 2 * capacity)), np.float64)
        self.halves = shared.reshape(2, 1 + 2 * capacity)  # [0]: the caller's, [1]: the worker's

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Record when owner.name begins and ends (functools.wraps keeps the name and module,
        so a call pickled for the worker still finds the function, and its attributes)."""
        inner = getattr(owner, name)
        begin, end = self.index_of(label + "<"), self.index_of(label + ">")

        @functools.wraps(inner)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.add(begin)
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(end)
        self.wrapped.append((owner, name, inner))
        setattr(owner, name, recorded)

    def unwrap(self) -> None:
        """Put every wrapped function back."""
        for owner, name, inner in reversed(self.wrapped):
            setattr(owner, name, inner)
        self.wrapped.clear()

    def index_of(self, label: str) -> int:
        """A new label's index in the rows."""
        self.labels.append(label)
        return len(self.labels) - 1

    def add(self, label: int) -> None:
        half = self.halves[0 if os.getpid() == self.caller else 1]
        count = int(half[0])
        if 2 * count + 2 < len(half):
            half[1 + 2 * count:3 + 2 * count] = label, time.perf_counter()
            half[0] = count + 1

    def clear(self) -> None:
        self.halves[:, 0] = 0

    def events(self, which: int) -> list[Event]:
        half = self.halves[which]
        rows = half[1:1 + 2 * int(half[0])].reshape(-1, 2)
        return [(self.labels[int(label)], float(t)) for label, t in rows]


def timeline(model: str = "lenet", batch: int = 64, steps: int = 200,
             warmup: int = 100) -> list[tuple[str, float, int]]:
    """[(event, median microseconds from the step's start, steps it was seen in)], in order."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    net = MODELS[model](seed=0)
    trainer = dc.Trainer(net, dc.SoftmaxCrossEntropy(), dc.SGD(net.parameters(), lr=0.01, momentum=0.9),
                         progress=False)
    recorder = _Recorder(capacity=40 * (warmup + steps))
    workers.release_workers()  # forked again below, with the recorder in place
    try:
        caller, worker = _record(recorder, trainer, x, y, warmup, steps)
    finally:
        recorder.unwrap()
        workers.release_workers()  # its recorder goes with it
    return _medians(caller, worker)


def _record(recorder: _Recorder, trainer: Any, x: np.ndarray, y: np.ndarray, warmup: int,
            steps: int) -> tuple[list[Event], list[Event]]:
    """(the caller's events, the worker's) of ``steps`` train_step calls after ``warmup``."""
    step_label = recorder.index_of("C step<")
    _wrap_step(recorder, trainer)
    dc.set_num_threads(2)
    try:
        for index in range(warmup + steps):
            if index == warmup:
                recorder.clear()
            recorder.add(step_label)
            trainer.train_step(x, y)
        recorder.add(step_label)
    finally:
        dc.set_num_threads(None)
    caller = [(label, t) for label, t in recorder.events(0) if not label.startswith("W")]  # its own pack is in start
    return caller, recorder.events(1)


def _wrap_step(recorder: _Recorder, trainer: Any) -> None:
    """Record the engine's events of a training step and the trainer's loss and optimizer."""
    for owner, name, label in [(workers.Worker, "start", "C start"), (workers.Worker, "finish", "C finish"),
                               (passes, "_attempt", "C own"), (trainer.loss, "forward", "C loss"),
                               (trainer.optimizer, "step", "C optimizer"),
                               (passes, "_forward_kept", "W forward"), (passes, "_backward_kept", "W backward"),
                               (arena.Replies, "pack", "W pack")]:
        recorder.wrap(owner, name, label)


def fit_timeline(name: str = "fast", steps: int = 200, warmup: int = 100) -> list[tuple[str, float, int]]:
    """timeline() of ``Trainer.fit`` training model ``name`` with its TRAINING_DEFAULTS, as
    ``dualconv train`` does, on random MNIST-shaped images: ``steps`` steps after ``warmup``
    left out (one more batch is trained, whose start ends the last step)."""
    config = runs.settings({"model": name, "seed": 0}, None, epochs=1)
    n = (warmup + steps + 1) * config["batch_size"]
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)
    trainer = recipe.build_trainer(config, recipe.make_model(config, x.shape[1:], 10), 1, n, progress=False)
    recorder = _Recorder(capacity=40 * (warmup + steps + 1))
    workers.release_workers()  # forked again below, with the recorder in place
    try:
        recorder.wrap(divergence.LastFiniteState, "begin_step", "C step")
        _wrap_step(recorder, trainer)
        for owner, method, label in [(augment.Shift, "__call__", "C shift"), (trainer, "train_step", "C train_step"),
                                     (trainer.model, "forward", "C forward"), (trainer.model, "backward", "C backward"),
                                     (trainer.scheduler, "step", "C schedule")]:
            if owner is not None:
                recorder.wrap(owner, method, label)
        dc.set_num_threads(2)
        try:
            trainer.fit(x, y, epochs=1, batch_size=config["batch_size"], seed=0,
                        augment=recipe.augmentation(config))
        finally:
            dc.set_num_threads(None)
        caller = [(label, t) for label, t in recorder.events(0) if not label.startswith("W")]
        worker = recorder.events(1)
    finally:
        recorder.unwrap()
        workers.release_workers()
    cut = [t for label, t in caller if label == "C step<"][warmup]
    return _medians([event for event in caller if event[1] >= cut], [event for event in worker if event[1] >= cut])


def _medians(caller: list[Event], worker: list[Event]) -> list[tuple[str, float, int]]:
    """Each event's offsets from the start of the step it falls in, numbered by its
    order within the step ("C finish<#2": the second finish), as medians."""
    starts = [t for label, t in caller if label == "C step<"]
    offsets: dict[str, list[float]] = collections.defaultdict(list)
    for first, last in zip(starts, starts[1:]):
        seen: collections.Counter = collections.Counter()
        for t, label in sorted((t, label) for label, t in caller + worker if first <= t < last):
            seen[label] += 1
            offsets[f"{label}#{seen[label]}"].append((t - first) * 1e6)
    rows = [(name, statistics.median(values), len(values)) for name, values in offsets.items()]
    return sorted(rows, key=lambda row: row[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--recipe", choices=sorted(TRAINING_DEFAULTS),
                        help="record Trainer.fit of this model with its TRAINING_DEFAULTS instead")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be 1 or more, got {args.steps}")
    rows = fit_timeline(args.recipe, args.steps) if args.recipe else timeline(args.model, args.batch, args.steps)
    for name, offset, seen in rows:
        print(f"{offset:9.1f} us  {name} ({seen} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
