"""Per-batch learning-rate schedules (one-cycle, cosine with warm-up): hand-worked rates,
PyTorch's OneCycleLR step for step, how the Trainer steps them, and exact resumes."""
from __future__ import annotations

import math

import numpy as np
import pytest

import dualconv as dc
from dualconv import checkpoint
from dualconv.optim import Parameter
from dualconv.schedules import OneCycleLR, WarmupCosineLR

from error_bounds import gamma


class Holder:
    def __init__(self) -> None:
        self.params, self.grads = {"w": np.zeros(3)}, {}


def optimizer(lr: float = 1.0) -> dc.SGD:
    return dc.SGD([Parameter(Holder(), "w", "w")], lr=lr)


def rates(schedule, steps: int) -> list[float]:
    """The optimizer's rate before each of ``steps`` steps (as the step would use it)."""
    out = []
    for _ in range(steps):
        out.append(schedule.optimizer.lr)
        schedule.step()
    return out


def test_one_cycle_linear_by_hand():
    # max_lr 1, div 4 -> starts at 0.25; final_div 5 -> ends at 0.05; 10 steps, warm-up ends at step 3.
    sched = OneCycleLR(optimizer(), max_lr=1.0, total_steps=10, pct_start=0.4, anneal_strategy="linear",
                       div_factor=4.0, final_div_factor=5.0)
    expected = [0.25, 0.5, 0.75, 1.0] + [1.0 - 0.95 * k / 6 for k in range(1, 7)]
    # a few roundings of numbers up to max_lr each: an absolute bound (the end is a near-cancellation)
    np.testing.assert_allclose(rates(sched, 10), expected, rtol=0, atol=gamma(4, np.float64) * 1.0)


def test_one_cycle_cosine_by_hand():
    sched = OneCycleLR(optimizer(), max_lr=2.0, total_steps=5, pct_start=0.4, div_factor=2.0, final_div_factor=10.0)
    # warm-up over steps 0..1 (end_step 1): 1 -> 2; then 2 -> 0.1 over steps 1..4: half a cosine.
    down = [0.1 + 1.9 * (1 + math.cos(math.pi * k / 3)) / 2 for k in (1, 2, 3)]
    np.testing.assert_allclose(rates(sched, 5), [1.0, 2.0, *down], rtol=0, atol=gamma(4, np.float64) * 2.0)


def test_one_cycle_of_a_short_run_where_pytorch_divides_by_zero():
    """Four steps with pct_start 0.25 end the warm-up at step 0: the peak at once, then the
    cosine down (PyTorch raises ZeroDivisionError here); with pct_start 1 the whole run
    warms up, and the step after it is the floor."""
    sched = OneCycleLR(optimizer(), max_lr=2.0, total_steps=4, pct_start=0.25, div_factor=2.0,
                       final_div_factor=10.0)
    down = [0.1 + 1.9 * (1 + math.cos(math.pi * k / 3)) / 2 for k in (1, 2, 3)]
    np.testing.assert_allclose(rates(sched, 4), [2.0, *down], rtol=0, atol=gamma(4, np.float64) * 2.0)
    sched = OneCycleLR(optimizer(), max_lr=2.0, total_steps=3, pct_start=1.0, anneal_strategy="linear",
                       div_factor=2.0, final_div_factor=10.0)
    np.testing.assert_allclose(rates(sched, 3), [1.0, 1.5, 2.0], rtol=0, atol=gamma(4, np.float64) * 2.0)
    assert sched.optimizer.lr == 0.1  # stepped past the last step: the floor


def test_warmup_cosine_by_hand():
    sched = WarmupCosineLR(optimizer(0.8), total_steps=6, warmup_steps=2, min_lr=0.2)
    expected = [0.0, 0.4, 0.8, 0.2 + 0.6 * (1 + math.cos(math.pi / 4)) / 2, 0.5,
                0.2 + 0.6 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.2, 0.2]
    np.testing.assert_allclose(rates(sched, 8), expected, rtol=0, atol=gamma(4, np.float64) * 0.8)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("total, pct", [(100, 0.3), (469, 0.25), (7, 0.5)])
def test_one_cycle_equals_pytorch_at_every_step(strategy, total, pct):
    torch = pytest.importorskip("torch")
    weight = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([weight], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.4, total_steps=total, pct_start=pct,
                                              anneal_strategy=strategy, cycle_momentum=False,
                                              div_factor=20.0, final_div_factor=300.0)
    sched = OneCycleLR(optimizer(0.1), max_lr=0.4, total_steps=total, pct_start=pct, anneal_strategy=strategy,
                       div_factor=20.0, final_div_factor=300.0)
    for step in range(total):
        # the same formulas in the same order: equal to the last bit
        assert sched.optimizer.lr == ref_opt.param_groups[0]["lr"], step
        ref_opt.step()
        ref.step()
        sched.step()


def test_one_cycle_refuses_steps_past_its_plan_and_bad_arguments():
    sched = OneCycleLR(optimizer(), max_lr=1.0, total_steps=2)
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="past total_steps=2"):
        sched.step()
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        OneCycleLR(optimizer(), max_lr=1.0, total_steps=0)
    with pytest.raises(ValueError, match="anneal_strategy must be 'cos' or 'linear', got 'exp'"):
        OneCycleLR(optimizer(), max_lr=1.0, total_steps=5, anneal_strategy="exp")
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps=5\), got 5"):
        WarmupCosineLR(optimizer(), total_steps=5, warmup_steps=5)


def test_state_dict_restores_the_position_and_the_rate():
    sched = OneCycleLR(optimizer(), max_lr=1.0, total_steps=20)
    rates(sched, 7)
    other = OneCycleLR(optimizer(), max_lr=1.0, total_steps=20)
    other.load_state_dict(sched.state_dict())
    assert other.epoch == 7 and other.optimizer.lr == sched.optimizer.lr


def test_per_epoch_schedules_still_step_once_per_epoch():
    X, y = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32), np.arange(40) % 10
    model = dc.models.weidman(seed=0)
    opt = dc.SGD(model.parameters(), lr=0.1)
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, scheduler=dc.StepLR(opt, 1, 0.5), progress=False)
    trainer.fit(X, y, epochs=3, batch_size=8, seed=0)
    assert trainer.scheduler.epoch == 3 and opt.lr == 0.1 * 0.5 ** 3


class RecordingSGD(dc.SGD):
    def step(self, guard=None):
        self.used.append(self.lr)
        super().step(guard)


def _data():
    rng = np.random.default_rng(1)
    return rng.random((60, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 60)


def _onecycle_trainer(epochs: int, batches: int) -> dc.Trainer:
    model = dc.models.weidman(seed=3)
    model.build((1, 1, 8, 8))
    opt = RecordingSGD(model.parameters(), lr=0.05, momentum=0.9)
    opt.used = []
    sched = OneCycleLR(opt, max_lr=0.2, total_steps=epochs * batches)
    return dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, scheduler=sched, progress=False)


def test_trainer_steps_a_per_batch_schedule_after_every_optimizer_step():
    X, y = _data()
    trainer = _onecycle_trainer(2, 4)
    trainer.fit(X, y, epochs=2, batch_size=16, seed=0)  # 60 samples: 4 batches per epoch
    reference = OneCycleLR(optimizer(0.05), max_lr=0.2, total_steps=8)
    assert trainer.optimizer.used == rates(reference, 8)
    assert trainer.scheduler.epoch == 8


def test_resume_mid_cycle_gives_the_same_bits(tmp_path):
    X, y = _data()
    whole = _onecycle_trainer(3, 4)
    whole.fit(X, y, epochs=3, batch_size=16, seed=5, augment=dc.Shift(1))
    first = _onecycle_trainer(3, 4)
    first.fit(X, y, epochs=1, batch_size=16, seed=5, augment=dc.Shift(1))
    checkpoint.save_checkpoint(tmp_path / "c.npz", first.state_dict(), 1, {})
    resumed = _onecycle_trainer(3, 4)
    resumed.load_state_dict(checkpoint.load_checkpoint(tmp_path / "c.npz").state)
    assert resumed.scheduler.epoch == 4 and resumed.optimizer.lr == first.optimizer.lr
    resumed.fit(X, y, epochs=3, batch_size=16, seed=5, initial_epoch=1, augment=dc.Shift(1))
    for layer_a, layer_b in zip(whole.model.layers, resumed.model.layers):
        for key in layer_a.params:
            assert np.array_equal(layer_a.params[key], layer_b.params[key]), key
