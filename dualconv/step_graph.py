"""A training step captured as one CUDA graph and replayed for every full batch (CuPy).

``Trainer(..., cuda_graph=True)`` trains a fit's full batches through a ``StepGraph``:
the fit's first full batch runs eagerly (the warm-up: every kernel compiled, the
optimizer's slots and the divergence guard's arrays made), the next one is captured
on a stream of its own, into a memory pool of its own, and every later one is one
``graph.launch()``. Inside the graph:

  step_begin   the device clock picks the step's row of the epoch's tables;
  gather_rows  the batch, rows order[s*B : s*B + B] of the resident X and y, is
               copied into fixed buffers xb, yb (one launch), then shifted by
               ``augment.Shift.by`` with the step's offsets when the fit augments;
  the step     forward, loss, backward, the guarded update and the guard's copies
               (Trainer.train_step as the eager step runs it), with the per-step
               values read on the device: the rate and Adam's bias corrections,
               the guard's step code, each Dropout's key (Dropout's first sample
               is 0 on the GPU, where a batch is never split, so it stays an argument);
  the sums     the running loss and correct count, added in place.

What changes from step to step lives in ``StepClock``'s tables, computed on the host
once per epoch from exactly what the eager step would pass (the scheduler's rate,
``optimizer.device_rates``, ``Dropout.key_of``, the guard's code 2 * (steps since its
last check), ``Shift.offsets``), cast as the eager kernels cast them: a replayed step is bitwise equal to
the eager step with the same products. The host keeps its own bookkeeping in step per
replay (the optimizer's step count, Dropout's forward count, the guard's pending
steps), so a smaller last batch, a checkpoint or a rollback after a replay sees what
an eager fit would. CuPy refuses cuBLAS during a capture, so the whole fit makes its
products with the gemm kernel (kernels/cuda_gemm.py: capturable()).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import kernels
from .augment import Shift
from .backend import xp_for
from .divergence import LastFiniteState
from .layers.dropout import Dropout


class StepClock:
    """A captured step's per-step values on the device.

    float_table (steps, R) holds ``optimizer.device_rates`` per step in the model's dtype;
    int_table (steps, 2 + 2D + 2S) holds (step index, guard code, each of the D Dropout
    layers' key as two int32 halves, then the (dy, dx) shift of each of the S samples of
    an augmented batch). ``kernels.step_begin`` copies row ``clock[0]`` into ``rates_at``
    (R,) and ``ints_now`` and advances the clock; the step's kernels read the views below.
    ``losses`` (steps,) keeps each step's loss for the guard's message.
    """

    def __init__(self, xp: Any, dtype: Any, steps: int, rates: int, dropouts: int,
                 shifted: int = 0) -> None:
        self.xp, self._dropouts = xp, dropouts
        width = 2 + 2 * dropouts + 2 * shifted
        self.clock = xp.zeros(1, dtype=np.int32)
        self.float_table = xp.zeros((steps, rates), dtype=dtype)
        self.int_table = xp.zeros((steps, width), dtype=np.int32)
        self.rates_at = xp.zeros(rates, dtype=dtype)
        self.ints_now = xp.zeros(width, dtype=np.int32)
        self.step_at, self.code_at = self.ints_now[0:1], self.ints_now[1:2]
        self.offsets_at = self.ints_now[2 + 2 * dropouts:].reshape(shifted, 2)  # (S, 2) dy, dx
        self.losses = xp.zeros(steps, dtype=dtype)

    def key_at(self, i: int) -> Any:
        """Dropout layer i's key for the current step: two int32 on the device."""
        return self.ints_now[2 + 2 * i:4 + 2 * i]

    def load(self, floats: np.ndarray, ints: np.ndarray, first: int) -> None:
        """The epoch's tables (host arrays of the tables' shapes), and the clock at row ``first``."""
        for table, values in ((self.float_table, floats), (self.int_table, ints),
                              (self.clock, np.array([first], np.int32))):
            table[...] = self.xp.asarray(values.astype(table.dtype))

    def begin(self) -> None:
        """The step's values into rates_at and ints_now, the clock advanced (one launch)."""
        kernels.step_begin(self.clock, self.float_table, self.int_table, self.rates_at, self.ints_now)


def epoch_tables(trainer: Any, dropouts: list[Dropout], steps: int,
                 shifts: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(floats (steps, R) float64, ints (steps, 2 + 2D + 2S) int64): what an eager epoch of
    ``steps`` steps starting now would pass to its kernels, step by step; ``shifts(s)``:
    step s's (S, 2) augmentation offsets, when the fit augments."""
    optimizer, scheduler = trainer.optimizer, trainer.scheduler
    per_batch = scheduler is not None and scheduler.per_batch
    lr, rows = optimizer.lr, []
    for s in range(steps):
        if per_batch and s:
            try:
                lr = scheduler.lr_at(scheduler.epoch + s)
            except ValueError:  # past a fixed-length schedule: the eager fit stops before this step
                pass
        rows.append(optimizer.device_rates(lr, optimizer.steps + s + 1))
    extra = [shifts(s).reshape(-1) for s in range(steps)] if shifts is not None else []
    ints = np.zeros((steps, 2 + 2 * len(dropouts) + (len(extra[0]) if extra else 0)), np.int64)
    ints[:, 0] = np.arange(steps)
    if extra:
        ints[:, 2 + 2 * len(dropouts):] = extra
    ints[:, 1] = 2 * (np.arange(steps) % trainer.log_every + 1)  # the guard checks every log_every
    for i, layer in enumerate(dropouts):
        keys = np.array([layer.key_of(layer.forwards + s) for s in range(steps)], np.uint64)
        ints[:, 2 + 2 * i] = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
        ints[:, 3 + 2 * i] = (keys >> np.uint64(32)).astype(np.uint32).view(np.int32)
    return np.array(rows, np.float64), ints


class StepGraph:
    """The full-batch training step of one fit on resident CuPy data, captured once and
    replayed (see the module docstring). X: (N, ...) C-contiguous on the device, y: (N,)
    int64 labels; ``batch`` the full batch size; ``steps`` the batches of an epoch;
    ``augment`` the fit's ``augment.Shift`` or None."""

    def __init__(self, trainer: Any, X: Any, y: Any, batch: int, steps: int,
                 augment: Shift | None = None) -> None:
        cupy = xp_for("cupy")
        model = trainer.model
        self.trainer, self.X, self.y, self.batch = trainer, X, y, int(batch)
        self.dropouts = [layer for layer in model.layers if isinstance(layer, Dropout) and layer.p > 0]
        rates = len(trainer.optimizer.device_rates(1.0, 1))
        self.augment = augment
        self.clock = StepClock(cupy, model.dtype, steps, rates, len(self.dropouts),
                               0 if augment is None else self.batch)
        self.order = cupy.zeros(len(X), dtype=np.int64)
        self.xb = cupy.empty((self.batch, *X.shape[1:]), dtype=X.dtype)
        self.yb = cupy.empty(self.batch, dtype=np.int64)
        self.loss_sum: Any = None  # the running sums, made by the warm-up (the loss's dtype)
        self.correct: Any = None
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool: Any = None  # the graph's own memory, kept as long as the graph
        self.graph: Any = None
        self.warmed = False
        self._captured: Any = None  # the guard's record of the captured step

    def start_epoch(self, order: Any, steps: int, epoch: int, augment_seed: int) -> None:
        """The epoch's order (device int64 (N,)) and tables; the running sums back to 0.
        ``epoch`` and ``augment_seed`` are what the eager steps pass to ``augment``."""
        self.order[...] = order
        shifts = None if self.augment is None else (
            lambda s: self.augment.offsets(self.batch, augment_seed, epoch, s))
        floats, ints = epoch_tables(self.trainer, self.dropouts, steps, shifts)
        self.clock.load(floats, ints, 0 if self.warmed else 1)  # before the warm-up: step 0 runs eagerly
        for total in (self.loss_sum, self.correct):
            if total is not None:
                total.fill(0)

    def runs(self, size: int) -> bool:
        """Whether a batch of ``size`` samples runs from the graph: full batches after the warm-up."""
        return size == self.batch and self.warmed

    def add(self, loss: Any, correct: Any, size: int) -> None:
        """An eager step's loss and correct count into the running sums (in place)."""
        xp = self.clock.xp
        if self.loss_sum is None:
            self.loss_sum = xp.zeros((), dtype=loss.dtype)
            self.correct = xp.zeros((), dtype=np.int64)
        xp.add(self.loss_sum, loss * size, out=self.loss_sum)
        xp.add(self.correct, correct, out=self.correct)
        self.warmed = self.warmed or size == self.batch

    def run(self, guard: LastFiniteState) -> None:
        """The current step (guard.begin_step was called): captured at the first call, then
        launched; the host bookkeeping of a step that no Python ran follows."""
        if self.graph is None:
            self._capture(guard)
        else:
            self.trainer.optimizer.steps += 1
            guard.replayed(self._captured, self.clock)
        for layer in self.dropouts:
            layer.skip(1)
        self.graph.launch(self.stream)

    def _capture(self, guard: LastFiniteState) -> None:
        cupy = xp_for("cupy")
        s = guard.current.epoch_step - 1
        if guard.code != 2 * (s % self.trainer.log_every + 1):  # the tables' rule for the code
            raise RuntimeError(f"StepGraph: the divergence guard is at code {guard.code} at step {s + 1}, "
                               f"but the step tables assume a check every {self.trainer.log_every} steps")
        guard.clock = self.clock
        for i, layer in enumerate(self.dropouts):
            layer.key_at = self.clock.key_at(i)
        self.pool = cupy.cuda.MemoryPool()
        try:
            with cupy.cuda.using_allocator(self.pool.malloc):
                self.stream.begin_capture()
                try:
                    self._record()
                except Exception as exc:
                    try:
                        self.stream.end_capture()
                    except Exception:  # the capture was invalidated by what raised
                        pass
                    self.trainer.optimizer.steps = guard.current.steps_before  # nothing ran
                    raise RuntimeError(f"Trainer.fit: capturing the training step as a CUDA graph failed "
                                       f"({type(exc).__name__}: {exc}); train with cuda_graph=False "
                                       f"(dualconv train --no-cuda-graph)") from exc
                self.graph = self.stream.end_capture()
        finally:
            guard.clock = None
            for layer in self.dropouts:
                layer.key_at = None
        self._captured = guard.current

    def _record(self) -> None:
        """What the graph holds: the clock, the gather, the step, the running sums."""
        self.clock.begin()
        kernels.gather_rows(self.X, self.y, self.order, self.clock.step_at, self.xb, self.yb)
        xb = self.xb if self.augment is None else self.augment.by(self.xb, self.clock.offsets_at)
        loss, correct = self.trainer.train_step(xb, self.yb)
        xp = self.clock.xp
        xp.add(self.loss_sum, loss * self.batch, out=self.loss_sum)
        xp.add(self.correct, correct, out=self.correct)
