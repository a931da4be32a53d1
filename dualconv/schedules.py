"""Learning-rate schedules stepped after every batch: one-cycle and cosine with warm-up.

Both set ``optimizer.lr`` from the number of optimizer steps taken (``epoch``, counted
in batches here), so ``Trainer`` steps them after each optimizer step (``per_batch``)
and a checkpoint holds their whole state in one integer. ``OneCycleLR`` follows
``torch.optim.lr_scheduler.OneCycleLR`` (two phases, no momentum cycling) formula for
formula, so the rates agree with PyTorch's to the last bit; the rate is a host float
on either backend (each update kernel receives it as an argument; a captured step
reads the rates ``lr_at`` gives, tabled once per epoch, on the device: step_graph.py).
"""
from __future__ import annotations

import math

from .optim import LRSchedule, Optimizer

ANNEAL_STRATEGIES = ("cos", "linear")


def _anneal(strategy: str, start: float, end: float, pct: float) -> float:
    """From start (pct 0) to end (pct 1): half a cosine, or a straight line."""
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _check_total(owner: str, total_steps: int) -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"{owner}: total_steps must be a positive integer (optimizer steps in the whole "
                         f"run: epochs * batches per epoch), got {total_steps!r}")
    return total_steps


class OneCycleLR(LRSchedule):
    """The one-cycle policy: warm up from max_lr/div_factor to max_lr, then anneal to
    max_lr/(div_factor*final_div_factor), over ``total_steps`` optimizer steps.

    The warm-up ends at step ``pct_start * total_steps - 1``; ``anneal_strategy`` "cos"
    or "linear" shapes both phases (PyTorch's definition). Constructing it sets the
    optimizer's rate to the step-0 value. Stepping past ``total_steps`` raises
    ValueError, since the cycle is planned for a fixed length. Where PyTorch divides by
    zero (a warm-up ending at step 0, as in a run of four steps with pct_start 0.25; the
    step after a run with pct_start 1), the rate is the peak, and the floor.
    """

    per_batch = True

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4) -> None:
        super().__init__(optimizer)
        self.total_steps = _check_total("OneCycleLR", total_steps)
        if not max_lr > 0:
            raise ValueError(f"OneCycleLR: max_lr must be positive, got {max_lr!r}")
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1] (the warm-up's share), got {pct_start!r}")
        if anneal_strategy not in ANNEAL_STRATEGIES:
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        if not (div_factor > 0 and final_div_factor > 0):
            raise ValueError(f"OneCycleLR: div_factor and final_div_factor must be positive, got "
                             f"{div_factor!r} and {final_div_factor!r}")
        self.max_lr, self.pct_start, self.anneal_strategy = float(max_lr), float(pct_start), anneal_strategy
        self.initial_lr = self.max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        self.warmup_end = float(self.pct_start * self.total_steps) - 1
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch: int) -> float:
        if epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {epoch} times, past total_steps={self.total_steps}; "
                             f"plan the cycle for the whole run")
        if epoch <= self.warmup_end:
            if self.warmup_end == 0:  # a warm-up of one step (a short run): the peak at once
                return self.max_lr
            return _anneal(self.anneal_strategy, self.initial_lr, self.max_lr, epoch / self.warmup_end)
        span = self.total_steps - 1 - self.warmup_end
        if span <= 0:  # pct_start 1: the whole run warms up; past its end, the floor
            return self.min_lr
        return _anneal(self.anneal_strategy, self.max_lr, self.min_lr, (epoch - self.warmup_end) / span)


class WarmupCosineLR(LRSchedule):
    """A linear warm-up from 0 to the optimizer's rate (the peak) over ``warmup_steps``,
    then half a cosine down to ``min_lr`` at ``total_steps``:

    lr(t) = peak * t / warmup_steps                                       for t < warmup_steps
    lr(t) = min_lr + (peak - min_lr) * (1 + cos(pi * (t - w) / (total - w))) / 2   after,
    and min_lr from total_steps on (the rule of transformers' cosine schedule with warm-up).
    """

    per_batch = True

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(optimizer)
        self.total_steps = _check_total("WarmupCosineLR", total_steps)
        if not 0 <= warmup_steps < self.total_steps:
            raise ValueError(f"WarmupCosineLR: warmup_steps must be in [0, total_steps={self.total_steps}), "
                             f"got {warmup_steps!r}")
        if not 0 <= min_lr <= self.base_lr:
            raise ValueError(f"WarmupCosineLR: min_lr must be in [0, the peak {self.base_lr:g}], got {min_lr!r}")
        self.warmup_steps, self.min_lr = int(warmup_steps), float(min_lr)
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_steps:
            return self.base_lr * epoch / self.warmup_steps
        pct = min(1.0, (epoch - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * pct)) / 2
