"""Trainer(cuda_graph=True): the full-batch step captured as one CUDA graph (step_graph.py).

Oracles: the same fit run eagerly (cuda_graph=False) with the same matrix products
(kernels.cuda_gemm.capturable(), which a graph fit turns on for itself): weights,
optimizer state, BatchNorm statistics and history must be the same bits, through
SGD, Adam, Dropout, a per-batch schedule, BatchNorm, a smaller last batch, an epoch
boundary and a divergence rollback. The launch budget is counted by the emulated CuPy.
"""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from dualconv.divergence import TrainingDiverged
from dualconv.kernels import cuda_gemm
from dualconv.models import lenet

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

SAMPLES, BATCH = 84, 8  # 10 full batches and one of 4 an epoch


def _small_model() -> dc.Sequential:
    """Every kind of state a step changes: conv and dense weights, BatchNorm statistics, Dropout."""
    return dc.Sequential([dc.Conv2D(None, 4, 3, padding=1, bias=False), dc.BatchNorm2D(), dc.ReLU(),
                          dc.MaxPool2D(2, 2), dc.Flatten(), dc.Dense(None, 12), dc.Dropout(0.3),
                          dc.ReLU(), dc.Dense(None, 3)], seed=0)


def _trainer(kind: str, graph: bool, lr: float = 0.05, model: dc.Sequential | None = None) -> dc.Trainer:
    model = model or _small_model()
    model.to("cupy")
    if kind == "adam":
        opt = dc.Adam(model.parameters(), lr=lr / 10, weight_decay=0.01)
    else:
        opt = dc.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-3)
    scheduler = dc.OneCycleLR(opt, max_lr=lr, total_steps=2 * 11) if kind == "onecycle" else None
    return dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, scheduler, progress=False, log_every=3,
                      cuda_graph=graph)


def _data(cupy, nan_at: int | None = None):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((SAMPLES, 1, 6, 6)).astype(np.float32)
    if nan_at is not None:
        X[nan_at, 0, 2, 2] = np.nan
    return cupy.asarray(X), cupy.asarray(np.arange(SAMPLES) % 3)


def _assert_same_bits(a: dc.Trainer, b: dc.Trainer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    arrays = [(f"model {k}", v, sb["model"][k]) for k, v in sa["model"].items()]
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
    for name, slots in sa["optimizer"]["state"].items():
        arrays += [(f"{name}/{slot}", v, sb["optimizer"]["state"][name][slot]) for slot, v in slots.items()]
    for what, x, y in arrays:
        assert x.dtype == y.dtype and x.shape == y.shape, what
        assert np.array_equal(x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")), what
    assert sa["optimizer"]["steps"] == sb["optimizer"]["steps"]
    assert sa["scheduler_epoch"] == sb["scheduler_epoch"]


def _fit(emu, trainer: dc.Trainer, X, y, **kwargs):
    with cuda_gemm.capturable():  # the eager oracle makes the products a graph fit makes
        return trainer.fit(X, y, batch_size=BATCH, seed=3, **kwargs)


@pytest.mark.parametrize("kind", ["sgd", "adam", "onecycle"])
def test_a_graph_fit_equals_the_eager_fit_bit_for_bit(emu, kind):
    X, y = _data(emu.cupy)
    eager, graph = _trainer(kind, False), _trainer(kind, True)
    h_eager = _fit(emu, eager, X, y, epochs=2)
    emu.reset_counters()
    h_graph = _fit(emu, graph, X, y, epochs=2)
    assert emu.counters["graph_launches"] == 2 * 10 - 1  # every full batch but the warm-up
    _assert_same_bits(graph, eager)
    assert h_graph["loss"] == h_eager["loss"] and h_graph["accuracy"] == h_eager["accuracy"]
    # the model kept training state only through in-place writes: what moved is what a step moves
    assert graph.model.layers[6].forwards == eager.model.layers[6].forwards == 11


def test_a_graph_fit_writes_only_memory_it_owns(emu):
    """With CuPy's pool reuse emulated (a freed block goes to the next array of its size),
    a graph writing into memory it no longer owns would spoil another array."""
    from dualconv.testing import emulated_cupy
    with emulated_cupy(reuse_memory=True) as reusing:
        X, y = _data(reusing.cupy)
        eager, graph = _trainer("adam", False), _trainer("adam", True)
        h_eager, h_graph = _fit(reusing, eager, X, y, epochs=2), _fit(reusing, graph, X, y, epochs=2)
        _assert_same_bits(graph, eager)
        assert h_graph["loss"] == h_eager["loss"]


def test_on_numpy_the_switch_changes_nothing():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 1, 6, 6)).astype(np.float32), np.arange(40) % 3
    states = []
    for graph in (False, True):
        with dc.use_backend("numpy"):
            model = _small_model()
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.1),
                             progress=False, cuda_graph=graph)
        trainer.fit(X, y, batch_size=8, seed=0)
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert np.array_equal(value, states[1][key]), key


def test_a_graph_fit_of_lenet_equals_the_eager_fit_after_20_steps(emu):
    rng = np.random.default_rng(2)
    X = emu.cupy.asarray(rng.random((16 * 20, 1, 28, 28), dtype=np.float32))
    y = emu.cupy.asarray(rng.integers(0, 10, 16 * 20))
    eager, graph = (_trainer("adam", g, model=lenet(seed=0)) for g in (False, True))
    for trainer in (eager, graph):
        with cuda_gemm.capturable():
            trainer.fit(X, y, batch_size=16, seed=0)
    _assert_same_bits(graph, eager)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("bad_step", [2, 7])
def test_a_graph_fit_rolls_back_a_nan_as_the_eager_fit_does(emu, kind, bad_step):
    X, y = _data(emu.cupy, nan_at=(bad_step - 1) * BATCH + 1)  # in order: a sample of step bad_step
    errors = []
    trainers = [_trainer(kind, False), _trainer(kind, True)]
    for trainer in trainers:
        with pytest.raises(TrainingDiverged) as info:
            _fit(emu, trainer, X, y, epochs=1, shuffle=False)
        errors.append(info.value)
    assert [(e.epoch, e.step, e.samples) for e in errors] == [(1, bad_step, ((bad_step - 1) * BATCH,
                                                                              bad_step * BATCH - 1))] * 2
    assert str(errors[0]) == str(errors[1])
    assert "the loss became nan" in str(errors[1])
    _assert_same_bits(trainers[1], trainers[0])


def test_a_graph_fit_rolls_back_an_update_that_overflows(emu):
    X, y = _data(emu.cupy)
    errors, trainers = [], [_trainer("sgd", False, lr=1e38), _trainer("sgd", True, lr=1e38)]
    for trainer in trainers:
        with pytest.raises(TrainingDiverged) as info:
            _fit(emu, trainer, X, y, epochs=1)
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1])
    _assert_same_bits(trainers[1], trainers[0])


def _step_counts(emu, optimizer: str, batch: int) -> dict[str, float]:
    """Counters of one replayed LeNet step inside fit: after a first fit, fits of 2 and 3
    full batches, their difference (what a fit pays once, warm-up and capture included,
    cancels)."""
    rng = np.random.default_rng(0)
    X = emu.cupy.asarray(rng.random((3 * batch, 1, 28, 28), dtype=np.float32))
    y = emu.cupy.asarray(rng.integers(0, 10, 3 * batch))
    model = lenet(seed=0)
    model.to("cupy")
    opt = (dc.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else dc.Adam(model.parameters(), lr=1e-3))
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, progress=False, log_every=3,
                         cuda_graph=True)
    trainer.fit(X[:32], y[:32], batch_size=16, seed=0)  # what a Trainer's first fit makes, cheaply
    counts = []
    for n in (2, 3):
        emu.reset_counters()
        trainer.fit(X[:n * batch], y[:n * batch], batch_size=batch, seed=0)
        counts.append(dict(emu.counters))
    return {k: counts[1][k] - counts[0][k] for k in counts[0]}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch", [64, 256])
def test_a_replayed_lenet_step_is_one_graph_launch(emu, optimizer, batch):
    counts = _step_counts(emu, optimizer, batch)
    assert counts["graph_launches"] == 1, counts
    assert counts["kernel_launches"] <= 3, counts
    assert counts["syncs"] == counts["host_to_device"] == counts["device_to_host"] == 0, counts


def test_a_graph_fit_with_shift_augmentation_equals_the_eager_fit(emu):
    """The offsets of augment.Shift come from (seed, epoch, step): tabled per epoch, read on the device."""
    X, y = _data(emu.cupy)
    eager, graph = _trainer("sgd", False), _trainer("sgd", True)
    for trainer in (eager, graph):
        emu.reset_counters()
        _fit(emu, trainer, X, y, epochs=2, augment=dc.Shift(2))
    assert emu.counters["graph_launches"] == 2 * 10 - 1
    _assert_same_bits(graph, eager)


def test_data_off_the_device_or_another_augmentation_runs_eagerly(emu):
    X, y = _data(emu.cupy)
    trainer = _trainer("sgd", True)
    emu.reset_counters()
    trainer.fit(X, y, batch_size=BATCH, seed=0, augment=lambda x, seed, epoch, step: x * 1)
    assert emu.counters["graph_launches"] == 0
    from dualconv.testing import emulated_cupy
    with emulated_cupy(memory_bytes=1 << 14) as small:  # the data does not fit: batches move one by one
        trainer.fit(emu.cupy.asnumpy(X), emu.cupy.asnumpy(y), batch_size=BATCH, seed=0)
        assert small.counters["graph_launches"] == 0

@pytest.mark.parametrize("flag, graph_launches", [((), 2), (("--no-cuda-graph",), 0)])
def test_dualconv_train_on_cupy_replays_a_graph_unless_told_not_to(emu, tmp_path, monkeypatch, flag,
                                                                  graph_launches):
    from dualconv import backend, cli
    monkeypatch.setattr(backend, "_global", backend._global)  # --backend sets the process's default
    emu.reset_counters()
    assert cli.main(["train", "--dataset", "digits", "--model", "weidman", "--limit", "200", "--backend",
                     "cupy", "--no-progress", "--out", str(tmp_path), *flag]) == 0
    # 200 images: full batches of 64 at 0, 64 and 128 (warm-up, captured, replayed), then 8 eagerly
    assert emu.counters["graph_launches"] == graph_launches


class _ReadsBack(dc.SoftmaxCrossEntropy):
    """A loss that reads its value on the host: fine eagerly, refused during a capture."""

    def _forward(self, pred, target):
        value = super()._forward(pred, target)
        float(value)
        return value


def test_a_step_that_cannot_be_captured_is_a_clear_error_and_leaves_no_capture_behind(emu):
    X, y = _data(emu.cupy)
    trainer = _trainer("sgd", True)
    trainer.loss = _ReadsBack()
    with pytest.raises(RuntimeError, match=r"capturing the training step as a CUDA graph failed "
                                           r"\(RuntimeError: .*transfers are disallowed\).*--no-cuda-graph"):
        trainer.fit(X, y, batch_size=BATCH, seed=0)
    assert trainer.optimizer.steps == 1  # the warm-up's; the step that failed to capture never ran
    trainer.cuda_graph = False
    assert trainer.fit(X, y, batch_size=BATCH, seed=0)["loss"][0] > 0  # the device works on
