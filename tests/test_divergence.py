"""A NaN or infinite loss stops fit with the state of the last finite step; fit checks its arguments.

Oracle: a second, identical trainer that trains only on the batches before the bad
one; its weights, optimizer state and step count must equal, bitwise, what the
failed fit left behind (whatever ``log_every`` delays the check by).
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.divergence import TrainingDiverged

F32 = np.float32
X = np.random.default_rng(0).standard_normal((40, 1, 4, 4)).astype(F32)
Y = np.arange(40) % 3


def trainer(optimizer="sgd", lr=0.1, log_every=20, loss=None) -> dc.Trainer:
    model = dc.Sequential([dc.Flatten(), dc.Dense(None, 5), dc.Tanh(), dc.Dense(None, 3)], seed=0)
    opt = (dc.SGD(model.parameters(), lr=lr, momentum=0.9) if optimizer == "sgd"
           else dc.Adam(model.parameters(), lr=lr))
    return dc.Trainer(model, loss or dc.SoftmaxCrossEntropy(), opt, progress=False, log_every=log_every)


def assert_same_state(a: dc.Trainer, b: dc.Trainer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert_array_equal(sa["model"][key], sb["model"][key], err_msg=key)
    assert sa["optimizer"]["steps"] == sb["optimizer"]["steps"]
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
    for name, slots in sa["optimizer"]["state"].items():
        for slot, value in slots.items():
            assert_array_equal(value, sb["optimizer"]["state"][name][slot], err_msg=f"{name}/{slot}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("log_every", [1, 3, 20])
@pytest.mark.parametrize("bad_step", [1, 4])
def test_nan_in_a_batch_keeps_the_state_of_the_last_finite_step(optimizer, log_every, bad_step) -> None:
    Xn = X.copy()
    Xn[(bad_step - 1) * 4 + 2, 0, 1, 1] = np.nan  # a sample of step bad_step (batches of 4, in order)
    failed = trainer(optimizer, log_every=log_every)
    with pytest.raises(TrainingDiverged) as info:
        failed.fit(Xn, Y, epochs=1, batch_size=4, shuffle=False)
    error = info.value
    assert (error.epoch, error.step, error.samples) == (1, bad_step, ((bad_step - 1) * 4, bad_step * 4 - 1))
    assert str(error).startswith(f"Trainer.fit: the loss became nan at epoch 1, step {bad_step} (samples "
                                 f"{(bad_step - 1) * 4}-{bad_step * 4 - 1} of the epoch's order)")
    assert "weights were kept" in str(error)
    for value in failed.model.state_dict().values():
        assert np.isfinite(value).all()

    reference = trainer(optimizer)
    reference.model.build((1, 1, 4, 4))
    if bad_step > 1:
        reference.fit(X[:(bad_step - 1) * 4], Y[:(bad_step - 1) * 4], epochs=1, batch_size=4, shuffle=False)
    assert_same_state(failed, reference)


class GradientBlowsUpAt(dc.SoftmaxCrossEntropy):
    """Softmax cross-entropy whose gradient is infinite (or NaN) at its ``at``-th step,
    while the loss stays finite: only the check of the updated weights can see it."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def _backward(self):
        self.calls += 1
        gz = super()._backward()
        return gz * gz.dtype.type(np.inf) if self.calls == self.at else gz


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("log_every", [1, 3, 20])
@pytest.mark.parametrize("bad_step", [1, 4])
def test_a_non_finite_update_is_rolled_back_to_the_last_finite_step(optimizer, log_every, bad_step) -> None:
    failed = trainer(optimizer, log_every=log_every, loss=GradientBlowsUpAt(bad_step))
    with pytest.raises(TrainingDiverged, match=rf"the update made the weights non-finite \(the loss was "
                                               rf"[0-9.]+\) at epoch 1, step {bad_step} "):
        failed.fit(X, Y, epochs=1, batch_size=4, shuffle=False)
    reference = trainer(optimizer)
    reference.model.build((1, 1, 4, 4))
    if bad_step > 1:
        reference.fit(X[:(bad_step - 1) * 4], Y[:(bad_step - 1) * 4], epochs=1, batch_size=4, shuffle=False)
    assert_same_state(failed, reference)


def test_train_step_called_between_epochs_runs_unguarded() -> None:
    """An on_epoch_end callback may train a step itself: it is a plain train_step."""
    guarded, plain = trainer(), trainer()
    guarded.fit(X, Y, epochs=2, batch_size=8, shuffle=False,
                on_epoch_end=lambda epoch, logs: guarded.train_step(X[:8], Y[:8]))
    for _ in range(2):
        plain.fit(X, Y, epochs=1, batch_size=8, shuffle=False)
        plain.train_step(X[:8], Y[:8])
    assert_same_state(guarded, plain)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_in_a_later_epoch_names_that_epoch() -> None:
    Xn = np.concatenate([X, X[:4]])
    Yn = np.concatenate([Y, Y[:4]])
    first = trainer()
    first.fit(Xn, Yn, epochs=1, batch_size=4, shuffle=False)
    state = {k: v.copy() for k, v in first.model.state_dict().items()}
    Xn[41, 0, 0, 0] = np.inf  # step 11 of each epoch
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 11 \(samples 40-43"):
        first.fit(Xn, Yn, epochs=2, batch_size=4, shuffle=False, initial_epoch=1)
    # kept: after step 10 of epoch 2, which trained on the same (finite) batches as epoch 1's first 10
    assert first.optimizer.steps == 11 + 10
    assert not all(np.array_equal(v, state[k]) for k, v in first.model.state_dict().items())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_huge_learning_rate_never_leaves_non_finite_weights() -> None:
    failed = trainer(loss=dc.MeanSquaredError(), lr=1e30)
    with pytest.raises(TrainingDiverged, match=r"the (loss became (nan|inf)|update made the weights non-finite)"):
        failed.fit(X, np.eye(3, dtype=F32)[Y], epochs=3, batch_size=4, shuffle=False)
    for value in failed.model.state_dict().values():
        assert np.isfinite(value).all()
    for slots in failed.optimizer.state_dict()["state"].values():
        for value in slots.values():
            assert np.isfinite(value).all()


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"epochs": 0}, ValueError, r"Trainer.fit: epochs must be >= 1, got 0"),
    ({"epochs": -1}, ValueError, r"Trainer.fit: epochs must be >= 1, got -1"),
    ({"epochs": 2.5}, TypeError, r"Trainer.fit: epochs must be an integer, got 2.5"),
    ({"batch_size": 1.5}, TypeError, r"Trainer.fit: batch_size must be an integer, got 1.5"),
    ({"batch_size": True}, TypeError, r"Trainer.fit: batch_size must be an integer, got True"),
    ({"epochs": 2, "initial_epoch": 2}, ValueError, r"initial_epoch \(2\) must be below epochs \(2\)"),
])
def test_fit_rejects_bad_epochs_and_batch_sizes(kwargs, error, pattern) -> None:
    t = trainer()
    before = t.model.state_dict()
    with pytest.raises(error, match=pattern):
        t.fit(X, Y, **kwargs)
    for key, value in t.model.state_dict().items():
        assert_array_equal(value, before[key])


def test_numpy_integer_batch_size_is_accepted() -> None:
    history = trainer().fit(X, Y, epochs=np.int64(1), batch_size=np.int32(8))
    assert len(history["loss"]) == 1


def test_fit_without_an_optimizer_says_so() -> None:
    model = dc.Sequential([dc.Flatten(), dc.Dense(None, 3)], seed=0)
    with pytest.raises(ValueError, match=r"Trainer.fit: this Trainer has no optimizer"):
        dc.Trainer(model, dc.SoftmaxCrossEntropy()).fit(X, Y)


def test_evaluate_confusion_matrix_counts_by_hand() -> None:
    t = trainer()
    t.fit(X, Y, epochs=2, batch_size=8, seed=0)
    result = t.evaluate(X, Y, batch_size=7, confusion_matrix=True)
    predicted = t.model.predict(X).argmax(axis=1)
    expected = [[sum(1 for a, b in zip(Y, predicted) if a == i and b == j) for j in range(3)] for i in range(3)]
    assert result["confusion_matrix"] == expected
    assert result["accuracy"] == sum(expected[i][i] for i in range(3)) / len(Y)
