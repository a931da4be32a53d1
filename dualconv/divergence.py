"""Non-finite losses: stop training with the weights of the last good step.

The guard keeps a second copy of every weight and optimizer state array, on the
same device, that always holds the state after the last step whose loss was
finite (and whose update left the weights finite). After each step it computes
a device-side flag ``ok &= isfinite(loss) & isfinite(sum of the weights)`` and
copies the live arrays into the copy under that flag (``xp.copyto(..., where=ok)``):
once a step fails, the flag stays False and the copy stops following. Nothing
of this reads a value back to the host, so a GPU step gains no synchronization;
it costs one masked copy of the weights and optimizer state per step and twice
their memory (PyTorch's GradScaler instead skips a step on a device-side
found-inf flag). For LeNet at batch 64 on the CPU that is about 0.1 ms per step,
under 1% of the step.

The host reads the flag only where the Trainer already reads the running loss
(every ``log_every`` steps and at the end of each epoch). When it is False,
``restore`` copies the last good state back into the model and optimizer and
``error`` names the epoch, the step and its samples.
"""
from __future__ import annotations

from typing import Any

from .backend import get_array_module


class TrainingDiverged(ValueError):
    """The loss (or the weights) became NaN or infinite; the model holds the last good step's state.

    ``epoch`` and ``step`` are 1-based; ``samples`` is the range of positions
    in the epoch's (shuffled) order that the failing step trained on.
    """

    def __init__(self, message: str, epoch: int, step: int, samples: tuple[int, int]) -> None:
        super().__init__(message)
        self.epoch, self.step, self.samples = epoch, step, samples


class LastFiniteState:
    """A device-side copy of the model's weights and the optimizer's state after the last finite step."""

    def __init__(self, model: Any, optimizer: Any) -> None:
        self.model, self.optimizer = model, optimizer
        self._copies = {key: live.copy() for key, live in self._live().items()}
        self._initial_keys = set(self._copies)
        self._ok: Any = True
        # (finite flag, loss, step, samples, optimizer.steps after it) of each step since the last check
        self._pending: list[tuple[Any, Any, int, tuple[int, int], int]] = []
        self._good_steps = self._first_steps = optimizer.steps

    def _live(self) -> dict[tuple[str, str], Any]:
        arrays = {("param", p.name): p.data for p in self.model.parameters()}
        for name, slots in self.optimizer.state.items():
            for slot, value in slots.items():
                arrays[(name, slot)] = value
        return arrays

    def _follow(self, ok: Any) -> None:
        for key, live in self._live().items():
            xp = get_array_module(live)
            copy = self._copies.get(key)
            if copy is None:  # a slot the optimizer just created: before this step it was zeros
                copy = self._copies[key] = xp.zeros_like(live)
            xp.copyto(copy, live, where=ok)

    def after_step(self, loss: Any, step: int, samples: tuple[int, int]) -> None:
        """Record step ``step`` (its loss a device scalar): follow it if everything is still finite."""
        params = [p.data for p in self.model.parameters()]
        xp = get_array_module(loss, *params)
        finite = xp.isfinite(loss) & xp.isfinite(sum(w.sum() for w in params))
        self._ok = finite & self._ok
        self._pending.append((finite, loss, step, samples, self.optimizer.steps))
        self._follow(self._ok)

    def all_finite(self) -> bool:
        """Whether every step so far was finite (one read of a device flag)."""
        if bool(self._ok):
            if self._pending:
                self._good_steps = self._pending[-1][4]
            self._pending.clear()
            return True
        return False

    def restore(self) -> None:
        """Put the last good state back into the live arrays (in place)."""
        for key, live in self._live().items():
            live[...] = self._copies[key]
        bad = next(i for i, item in enumerate(self._pending) if not bool(item[0]))
        self.optimizer.steps = self._pending[bad - 1][4] if bad else self._good_steps
        if self.optimizer.steps == self._first_steps:  # no good step: drop the slots the bad one created
            for name, slot in set(self._copies) - self._initial_keys:
                del self.optimizer.state[name][slot]
            self.optimizer.state = {name: slots for name, slots in self.optimizer.state.items() if slots}

    def error(self, who: str, epoch: int) -> TrainingDiverged:
        """The error to raise after ``restore``: which step failed, and that the weights were kept."""
        _, loss, step, (first, last), _ = next(item for item in self._pending if not bool(item[0]))
        value = float(loss)
        what = (f"the loss became {value}" if value != value or abs(value) == float("inf")
                else f"the update made the weights non-finite (the loss was {value:.4g})")
        kept = f"after step {step - 1}, the last finite step" if step > 1 else "at the start of the epoch"
        return TrainingDiverged(
            f"{who}: {what} at epoch {epoch + 1}, step {step} (samples {first}-{last} of the epoch's order); "
            f"training stopped and the weights were kept as they were {kept}. "
            f"Lower the learning rate, or check the inputs for NaN/inf.",
            epoch + 1, step, (first, last))
