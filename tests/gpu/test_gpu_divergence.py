"""fit's divergence guard on the CuPy backend: the same promises as on NumPy
(tests/test_divergence.py), kept by the guarded kernels on the device.

Oracle: a second trainer on the same backend that trains only on the batches
before the bad one; the failed fit's weights, optimizer state and step count
must equal it bit for bit, whatever ``log_every`` delays the check by. Across
backends the guarded kernels are bitwise equal to their NumPy twins
(tests/cuda/test_cuda_guarded.py), but a model's numbers are not (softmax
cross-entropy's exp and log, GEMM order), so there both must stop at the same
step for the same reason.
"""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from dualconv.divergence import TrainingDiverged
from test_divergence import GradientBlowsUpAt, X, Y, assert_same_state, trainer

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def _failed_and_reference(backend: str, optimizer: str, log_every: int, bad_step: int,
                          kind: str) -> tuple[dc.Trainer, dc.Trainer, TrainingDiverged]:
    """(the failed trainer, the reference trainer, the error) on ``backend``."""
    Xn = X.copy()
    loss = None
    if kind == "nan input":
        Xn[(bad_step - 1) * 4 + 2, 0, 1, 1] = np.nan  # a sample of step bad_step (batches of 4, in order)
    else:
        loss = GradientBlowsUpAt(bad_step)
    with dc.use_backend(backend):
        failed = trainer(optimizer, log_every=log_every, loss=loss)
        with pytest.raises(TrainingDiverged) as info:
            failed.fit(Xn, Y, epochs=1, batch_size=4, shuffle=False)
        reference = trainer(optimizer)
        reference.model.build((1, 1, 4, 4))
        if bad_step > 1:
            reference.fit(X[:(bad_step - 1) * 4], Y[:(bad_step - 1) * 4], epochs=1, batch_size=4,
                          shuffle=False)
    assert failed.model.backend == reference.model.backend == backend
    return failed, reference, info.value


@pytest.mark.parametrize("kind", ["nan input", "infinite gradient"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("log_every", [1, 3, 20])
@pytest.mark.parametrize("bad_step", [1, 4])
def test_a_failed_step_on_the_gpu_keeps_the_state_of_the_last_finite_step(kind, optimizer, log_every,
                                                                          bad_step):
    failed, reference, error = _failed_and_reference("cupy", optimizer, log_every, bad_step, kind)
    assert (error.epoch, error.step, error.samples) == (1, bad_step, ((bad_step - 1) * 4, bad_step * 4 - 1))
    what = "the loss became nan" if kind == "nan input" else "the update made the weights non-finite"
    assert str(error).startswith(f"Trainer.fit: {what}"), str(error)
    for value in failed.model.state_dict().values():
        assert np.isfinite(value).all()
    assert_same_state(failed, reference)


@pytest.mark.parametrize("kind", ["nan input", "infinite gradient"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_both_backends_stop_at_the_same_step_for_the_same_reason(kind, optimizer):
    _, _, gpu_error = _failed_and_reference("cupy", optimizer, 3, 4, kind)
    _, _, cpu_error = _failed_and_reference("numpy", optimizer, 3, 4, kind)
    assert (gpu_error.epoch, gpu_error.step, gpu_error.samples) == \
        (cpu_error.epoch, cpu_error.step, cpu_error.samples)
    assert str(gpu_error).split(" (")[0] == str(cpu_error).split(" (")[0]


def test_a_huge_learning_rate_on_the_gpu_never_leaves_non_finite_weights():
    with dc.use_backend("cupy"):
        failed = trainer(loss=dc.MeanSquaredError(), lr=1e30)
        with pytest.raises(TrainingDiverged, match=r"the (loss became (nan|inf)|update made the weights "
                                                   r"non-finite)"):
            failed.fit(X, np.eye(3, dtype=np.float32)[Y], epochs=3, batch_size=4, shuffle=False)
    for value in failed.model.state_dict().values():
        assert np.isfinite(value).all()
    for slots in failed.optimizer.state_dict()["state"].values():
        for value in slots.values():
            assert np.isfinite(value).all()
