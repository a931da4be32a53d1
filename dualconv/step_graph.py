"""A training step captured as one CUDA graph and replayed for every full batch (CuPy).

``Trainer(..., cuda_graph=True)`` trains a fit's full batches through a ``StepGraph``:
the fit's first full batch runs eagerly (the warm-up: every kernel compiled, the
optimizer's slots and the divergence guard's arrays made), the next one is captured
on a stream of its own, into a memory pool of its own, and every later one is one
``graph.launch()``. Inside the graph:

  step_begin   the device clock picks the step's row of the epoch's tables;
  gather_rows  the batch, rows order[s*B : s*B + B] of the resident X and y, is
               copied into fixed buffers xb, yb (one launch);
  the step     forward, loss, backward, the guarded update and the guard's copies
               (Trainer.train_step as the eager step runs it), with the per-step
               values read on the device: the rate and Adam's bias corrections,
               the guard's step code, each Dropout's key (Dropout's first sample
               is 0 on the GPU, where a batch is never split, so it stays an argument);
  the sums     the running loss and correct count, added in place.

What changes from step to step lives in ``StepClock``'s tables, computed on the host
once per epoch from exactly what the eager step would pass (the scheduler's rate,
``optimizer.device_rates``, ``Dropout.key_of``, the guard's code 2 * (steps since its
last check)), cast as the eager kernels cast them: a replayed step is bitwise equal to
the eager step with the same products. The host keeps its own bookkeeping in step per
replay (the optimizer's step count, Dropout's forward count, the guard's pending
steps), so a smaller last batch, a checkpoint or a rollback after a replay sees what
an eager fit would. CuPy refuses cuBLAS during a capture, so the whole fit makes its
products with the gemm kernel (kernels/cuda_gemm.py: capturable()).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from .backend import xp_for
from .divergence import LastFiniteState
from .layers.dropout import Dropout


class StepClock:
    """A captured step's per-step values on the device.

    float_table (steps, R) holds ``optimizer.device_rates`` per step in the model's dtype;
    int_table (steps, 2 + 2D) holds (step index, guard code, then each of the D Dropout
    layers' key as two int32 halves). ``kernels.step_begin`` copies row ``clock[0]`` into
    ``rates_at`` (R,) and ``ints_now`` and advances the clock; the step's kernels read the
    views below. ``losses`` (steps,) keeps each step's loss for the guard's message.
    """

    def __init__(self, xp: Any, dtype: Any, steps: int, rates: int, dropouts: int) -> None:
        self.xp = xp
        self.clock = xp.zeros(1, dtype=np.int32)
        self.float_table = xp.zeros((steps, rates), dtype=dtype)
        self.int_table = xp.zeros((steps, 2 + 2 * dropouts), dtype=np.int32)
        self.rates_at = xp.zeros(rates, dtype=dtype)
        self.ints_now = xp.zeros(2 + 2 * dropouts, dtype=np.int32)
        self.step_at, self.code_at = self.ints_now[0:1], self.ints_now[1:2]
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


def epoch_tables(trainer: Any, dropouts: list[Dropout], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(floats (steps, R) float64, ints (steps, 2 + 2D) int64): what an eager epoch of
    ``steps`` steps starting now would pass to its kernels, step by step."""
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
    ints = np.zeros((steps, 2 + 2 * len(dropouts)), np.int64)
    ints[:, 0] = np.arange(steps)
    ints[:, 1] = 2 * (np.arange(steps) % trainer.log_every + 1)  # the guard checks every log_every
    for i, layer in enumerate(dropouts):
        keys = np.array([layer.key_of(layer.forwards + s) for s in range(steps)], np.uint64)
        ints[:, 2 + 2 * i] = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
        ints[:, 3 + 2 * i] = (keys >> np.uint64(32)).astype(np.uint32).view(np.int32)
    return np.array(rows, np.float64), ints


class StepGraph:
    """The full-batch training step of one fit on resident CuPy data, captured once and
    replayed (see the module docstring). X: (N, ...) C-contiguous on the device, y: (N,)
    int64 labels; ``batch`` the full batch size; ``steps`` the batches of an epoch."""

    def __init__(self, trainer: Any, X: Any, y: Any, batch: int, steps: int) -> None:
        cupy = xp_for("cupy")
        model = trainer.model
        self.trainer, self.X, self.y, self.batch = trainer, X, y, int(batch)
        self.dropouts = [layer for layer in model.layers if isinstance(layer, Dropout) and layer.p > 0]
        rates = len(trainer.optimizer.device_rates(1.0, 1))
        self.clock = StepClock(cupy, model.dtype, steps, rates, len(self.dropouts))
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

    def start_epoch(self, order: Any, steps: int) -> None:
        """The epoch's order (device int64 (N,)) and tables; the running sums back to 0."""
        self.order[...] = order
        floats, ints = epoch_tables(self.trainer, self.dropouts, steps)
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
        loss, correct = self.trainer.train_step(self.xb, self.yb)
        xp = self.clock.xp
        xp.add(self.loss_sum, loss * self.batch, out=self.loss_sum)
        xp.add(self.correct, correct, out=self.correct)
