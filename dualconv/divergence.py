"""Non-finite losses: stop training with the weights of the last good step.

The design, the same on both backends (as PyTorch's GradScaler, which skips a
step on a device-side found-inf flag): the guard keeps one int32 on the model's
device, the verdict, and ``Trainer.fit`` runs every step through it:

* after the loss, one launch (``kernels.flag_nonfinite_loss``) marks the step as
  failed when its loss is NaN or infinite;
* the optimizer then updates every parameter with the guarded list kernels
  (``kernels.sgd_update_guarded_many``, ``adam_update_guarded_many``): one launch for
  them all, as without the guard. They read the verdict and skip the update when this step's
  loss or an earlier step failed, so a failed step and the ones after it never
  touch the weights. Otherwise they first copy every element they update into a
  last-good array (the state before the step), then flag the step as failed if
  any weight or optimizer state element they wrote is not finite.

The verdict encodes which step failed and how: NO_FAILURE while every step was
finite, 2s when the loss of step s (counted from the last good check) was not
finite, 2s + 1 when its update left a non-finite value. Step s's kernels get the
code 2s and run while the verdict exceeds it, so the rest of a step whose update
failed still runs (and fills its last-good arrays) whatever the launch order;
every thread that sees a non-finite result stores the same value, 2s + 1.

Nothing reads the verdict back during a step, so a GPU step gains no sync and
no copy launch: the guard costs one launch per step (the loss check), and one
last-good copy of the weights and optimizer state in memory. On NumPy the same
twins copy and check each updated array: a cost of a few calls per parameter
(a copy and a finiteness check of each weight and velocity), which
benchmarks/README.md ("divergence guard") measures.

The host reads the verdict only where the Trainer already reads the running loss
(every ``log_every`` steps and at the end of each epoch). When a step failed,
``restore`` puts the last good state back: after a non-finite loss the weights
were never changed, after a non-finite update the arrays it changed are copied
back from their last-good arrays; optimizer slots created by the failed step are
dropped and the optimizer's step count is set back. ``error`` then names the
epoch, the step and its samples.

Buffers (BatchNorm's running statistics) are written by the forward pass, not by
an optimizer kernel, so the guard keeps their last-good copies itself: after each
step's update, ``end_step`` copies every buffer into its last-good array only
while the verdict is still NO_FAILURE (one comparison with the verdict, then one
masked copy per buffer, on the device and without a sync; nothing at all for a
model without buffers), and ``restore`` copies them back.

A captured step (dualconv/step_graph.py) sets ``clock``: its kernels then read the
step code on the device (the ``*_at`` kernels), the loss check also keeps each step's
loss in ``clock.losses`` (the loss buffer is overwritten by later replays), and
``replayed`` does, for each replay, the host bookkeeping that running the step's
Python would have done.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import is_
from typing import Any

import numpy as np

from . import kernels
from .backend import get_array_module, xp_for

NO_FAILURE = 2**31 - 1
"""The verdict while every step was finite (the largest int32)."""


def _fits(last: Any, live: Any) -> bool:
    """Whether a kept last-good array can hold ``live``: same shape, dtype and backend."""
    return (last is not None and last.shape == live.shape and last.dtype == live.dtype
            and get_array_module(last) is get_array_module(live))


class TrainingDiverged(ValueError):
    """The loss (or the weights) became NaN or infinite; the model holds the last good step's state.

    ``epoch`` and ``step`` are 1-based; ``samples`` is the range of positions
    in the epoch's (shuffled) order that the failing step trained on.
    """

    def __init__(self, message: str, epoch: int, step: int, samples: tuple[int, int]) -> None:
        super().__init__(message)
        self.epoch, self.step, self.samples = epoch, step, samples


@dataclass
class _Step:
    """What the host knows of one step since the last check of the verdict."""
    epoch_step: int
    samples: tuple[int, int]
    steps_before: int                   # optimizer.steps before the step
    slots_before: set[tuple[str, str]]  # the optimizer's (parameter, slot) keys before it
    loss: Any = None
    updated: list[tuple[str, str]] = field(default_factory=list)  # arrays its kernels guarded


class LastFiniteState:
    """The divergence guard of one ``fit``: a device verdict and a last-good copy of
    every array the optimizer updates (see the module docstring)."""

    def __init__(self, model: Any, optimizer: Any) -> None:
        self.model, self.optimizer = model, optimizer
        self.verdict = xp_for(model.backend).full(1, NO_FAILURE, dtype=np.int32)
        self._last: dict[tuple[str, str], tuple[Any, Any]] = {}  # key -> (live array, its last-good copy)
        # (names, slot) -> (its keys, the live arrays, their last-good copies) of the last call:
        # a step whose lives are those objects again takes the copies whole (_lasts_of)
        self._lists: dict[tuple[tuple[str, ...], str], tuple[list[tuple[str, str]], tuple[Any, ...],
                                                             tuple[Any, ...]]] = {}
        self._last_buffers: dict[str, Any] = {}  # buffer name -> its copy after the last good step
        self._pending: list[_Step] = []
        self._failed: tuple[_Step, bool] | None = None  # (the step, whether its update failed)
        self.clock: Any = None  # a captured step's device values (step_graph.StepClock), or None
        self._buffers: dict[str, tuple[Any, str]] = {}  # the model's buffers when this step began

    @property
    def code(self) -> int:
        """The current step's code for the kernels: 2s, s counted from the last good check."""
        return 2 * len(self._pending)

    def _slot_keys(self) -> set[tuple[str, str]]:
        return {(name, slot) for name, slots in self.optimizer.state.items() for slot in slots}

    def begin_step(self, step: int, samples: tuple[int, int]) -> None:
        """Step ``step`` of the epoch (1-based) starts; it trains on positions ``samples``."""
        self._pending.append(_Step(step, samples, self.optimizer.steps, self._slot_keys()))
        self._buffers = self.model.buffers()  # end_step's too (fit builds the model first: a step adds none)
        for name, (layer, key) in self._buffers.items():
            live = layer.buffers[key]
            if not _fits(self._last_buffers.get(name), live):
                self._last_buffers[name] = live.copy()  # the state before this fit's first step

    def check_loss(self, loss: Any) -> None:
        """The step's loss (a 0-d array on the model's backend) is known: flag the step
        if it is not finite."""
        if type(loss) is not type(self.verdict):  # a NumPy scalar becomes 0-d; no copy
            loss = get_array_module(self.verdict).asarray(loss)
        if self.clock is None:
            self._pending[-1].loss = loss
            kernels.flag_nonfinite_loss(loss, self.verdict, self.code)
            return
        step = self._pending[-1]
        step.loss = self.clock.losses[step.epoch_step - 1:step.epoch_step].reshape(())  # a view
        kernels.flag_nonfinite_loss_at(loss, self.verdict, self.clock.step_at, self.clock.code_at,
                                       self.clock.losses)

    def replayed(self, captured: _Step, clock: Any) -> None:
        """The current step ran as a replay of the captured step ``captured``: it guarded the
        same arrays, and its loss is kept in ``clock.losses`` (the capture's clock)."""
        step = self._pending[-1]
        step.updated = list(captured.updated)
        step.loss = clock.losses[step.epoch_step - 1:step.epoch_step].reshape(())  # a view

    @property
    def current(self) -> _Step:
        """The step that runs now (begin_step's)."""
        return self._pending[-1]

    def last_goods(self, names: tuple[str, ...], *slots: tuple[str, Any]) -> list[tuple[Any, ...]]:
        """Per (slot, lives) pair, the arrays the guarded update copies each live array into
        before changing it: lives holds, per parameter of ``names``, its weight (slot
        "param") or its optimizer slot ``slot``. One call per step for all parameters: a
        call with the live arrays of the last call for (names, slot) takes its copies whole."""
        if isinstance(names, str):
            raise TypeError(f"last_goods: names must be a tuple of parameter names, got the "
                            f"string {names!r}")
        names = tuple(names)  # any sequence (a tuple is not copied): a key below
        updated = self._pending[-1].updated
        made = []
        for slot, lives in slots:
            lives = tuple(lives)  # any iterable (a tuple is not copied)
            listed = self._lists.get((names, slot))
            if listed is None or len(lives) != len(listed[1]) or not all(map(is_, lives, listed[1])):
                listed = self._lasts_of(names, slot, lives)
            updated += listed[0]
            made.append(listed[2])
        return made

    def _lasts_of(self, names: tuple[str, ...], slot: str, lives: tuple[Any, ...]
                  ) -> tuple[list[tuple[str, str]], tuple[Any, ...], tuple[Any, ...]]:
        """(keys, lives, last-good copies) of ``slot`` for names: each live array's kept copy
        where it is the same array as before, or still fits it, else a new one."""
        keys, lasts = [(name, slot) for name in names], []
        if len(keys) != len(lives):
            raise ValueError(f"last_goods: {len(names)} names but {len(lives)} {slot} arrays")
        for key, live in zip(keys, lives):
            kept = self._last.get(key)
            if kept is None or kept[0] is not live:
                last = None if kept is None else kept[1]
                if not _fits(last, live):
                    last = get_array_module(live).empty_like(live)
                kept = self._last[key] = (live, last)
                self._lists.clear()  # a key's copy may be another now: every list is made again
            lasts.append(kept[1])
        listed = self._lists[(names, slot)] = (keys, lives, tuple(lasts))
        return listed

    def end_step(self) -> None:
        """The step's forward and update were launched: copy every buffer into its
        last-good array while no step has failed (a masked copy, no host read)."""
        buffers = self._buffers
        if not buffers:
            return
        xp = get_array_module(self.verdict)
        no_failure = self.verdict == NO_FAILURE  # (1,) bool, broadcast over each buffer
        for name, (layer, key) in buffers.items():
            xp.copyto(self._last_buffers[name], layer.buffers[key], where=no_failure)

    def all_finite(self) -> bool:
        """Whether every step so far was finite (one read of the device verdict)."""
        verdict = int(self.verdict[0])
        if verdict == NO_FAILURE:
            self._pending.clear()
            return True
        self._failed = (self._pending[verdict // 2 - 1], verdict % 2 == 1)
        return False

    def _live(self) -> dict[tuple[str, str], Any]:
        arrays = {(p.name, "param"): p.data for p in self.model.parameters()}
        for name, slots in self.optimizer.state.items():
            for slot, value in slots.items():
                arrays[(name, slot)] = value
        return arrays

    def restore(self) -> None:
        """Put the last good state back into the live arrays (in place), after all_finite() was False."""
        failed, update_failed = self._failed
        if update_failed:
            live = self._live()
            for key in failed.updated:
                live[key][...] = self._last[key][1]
        for name, (layer, key) in self.model.buffers().items():
            layer.buffers[key][...] = self._last_buffers[name]
        for name, slot in self._slot_keys() - failed.slots_before:
            del self.optimizer.state[name][slot]
        self.optimizer.state = {name: slots for name, slots in self.optimizer.state.items() if slots}
        self.optimizer.steps = failed.steps_before

    def error(self, who: str, epoch: int) -> TrainingDiverged:
        """The error to raise after ``restore``: which step failed, and that the weights were kept."""
        failed, update_failed = self._failed
        step, (first, last) = failed.epoch_step, failed.samples
        value = float(failed.loss)
        what = (f"the update made the weights non-finite (the loss was {value:.4g})" if update_failed
                else f"the loss became {value}")
        kept = f"after step {step - 1}, the last finite step" if step > 1 else "at the start of the epoch"
        return TrainingDiverged(
            f"{who}: {what} at epoch {epoch + 1}, step {step} (samples {first}-{last} of the epoch's order); "
            f"training stopped and the weights were kept as they were {kept}. "
            f"Lower the learning rate, or check the inputs for NaN/inf.",
            epoch + 1, step, (first, last))
