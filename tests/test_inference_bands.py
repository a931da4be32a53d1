"""predict on the CPU computes a run of Conv2D, pointwise layers, Flatten, pointwise
layers and Dense a band of output rows at a time (dualconv/inference_bands.py).

Which runs are taken (hand-written layer lists); with integer-valued weights and
inputs every sum is exact, so the banded outputs equal the layer-by-layer forward bit
for bit whatever the bands (one row, a few with a shorter last band, all at once),
window, bias and pointwise layers; with Tanh, the outputs lie within the rounding
bound of the exact (float64) model, propagated through the convolution, Tanh and
Dense."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv import inference_bands, models
from dualconv import model as model_module
from dualconv.inference_bands import BandedInference, fused_run_end
from dualconv.layers import conv as conv_module
from dualconv.model import forward_batches
from error_bounds import gamma
from layer_error_bounds import transcendental


@pytest.mark.parametrize("layers, start, end", [
    (lambda: [dc.Conv2D(1, 2, 3), dc.Tanh(), dc.Flatten(), dc.Dropout(0.2), dc.Dense(None, 3)], 0, 4),
    (lambda: [dc.Conv2D(1, 2, 3), dc.Flatten(), dc.Dense(None, 3)], 0, 2),
    (lambda: [dc.Conv2D(1, 2, 3), dc.ReLU(), dc.Flatten(), dc.ReLU(), dc.Dense(None, 3), dc.ReLU()], 0, 4),
    (lambda: [dc.Dense(None, 4), dc.Conv2D(1, 2, 3), dc.Flatten(), dc.Dense(None, 3)], 1, 3),
    (lambda: [dc.Dense(None, 4), dc.Conv2D(1, 2, 3), dc.Flatten(), dc.Dense(None, 3)], 0, None),
    (lambda: [dc.Conv2D(1, 2, 3), dc.MaxPool2D(2), dc.Flatten(), dc.Dense(None, 3)], 0, None),
    (lambda: [dc.Conv2D(1, 2, 3), dc.Tanh(), dc.Dense(None, 3)], 0, None),
    (lambda: [dc.Conv2D(1, 2, 3), dc.Flatten(), dc.Flatten(), dc.Dense(None, 3)], 0, None),
    (lambda: [dc.Conv2D(1, 2, 3), dc.Flatten(), dc.Softmax(), dc.Dense(None, 3)], 0, None),
    (lambda: [dc.Conv2D(1, 2, 3), dc.Flatten()], 0, None),
], ids=["seed-002", "no-pointwise", "pointwise-after-flatten", "second-layer", "not-a-conv",
        "pool-between", "no-flatten", "two-flattens", "softmax-between", "no-dense"])
def test_which_runs_are_fused(layers, start: int, end: int | None) -> None:
    assert fused_run_end(layers(), start) == end


def _integer_model(window: dict, pointwise: list, bias: bool, dtype) -> dc.Sequential:
    """A Conv2D -> pointwise -> Flatten -> Dense model whose weights are small integers."""
    model = dc.Sequential([dc.Conv2D(None, 5, bias=bias, **window), *pointwise, dc.Flatten(),
                           dc.Dense(None, 4, bias=bias)], seed=0, dtype=dtype)
    model.build((1, 3, 9, 8))
    rng = np.random.default_rng(1)
    for p in model.parameters():
        p.data[...] = rng.integers(-3, 4, p.data.shape)
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [1, 2_000, 5_000, 10**9], ids=["rows-1", "rows-2", "rows-3", "one-band"])
@pytest.mark.parametrize("window, pointwise, bias", [
    (dict(kernel_size=3, padding=1), [dc.ReLU()], True),
    (dict(kernel_size=(2, 3), stride=(2, 1), dilation=(1, 2)), [dc.Identity(), dc.Dropout(0.5)], False),
    (dict(kernel_size=3, padding="same"), [dc.HardTanh()], True),
    (dict(kernel_size=1), [], True),
], ids=["relu-same-size", "strided-dilated", "hardtanh", "1x1"])
def test_exact_sums_equal_the_layer_by_layer_forward(monkeypatch, window, pointwise, bias, block: int, dtype) -> None:
    """Integer weights and inputs: every product and partial sum is an integer far below
    2^24, so both ways are exact and must agree bit for bit; a band slicing the weight
    or the columns wrongly, or a band left out, changes the outputs. The block sizes give
    bands of 1, 2 and 3 rows of 2 images (9 output rows: a shorter last band) and one band."""
    model = _integer_model(window, pointwise, bias, dtype)
    model.eval()
    x = np.random.default_rng(2).integers(-4, 5, (2, 3, 9, 8)).astype(dtype)
    expected = model.forward(x)
    monkeypatch.setattr(conv_module, "BLOCK_MULTIPLY_ADDS", block)
    runs = _count_runs(monkeypatch)
    got = forward_batches(model, x, batch_size=2)
    assert runs == [True]
    assert len(got) == 1 and got[0].dtype == dtype and got[0].flags.c_contiguous
    assert_array_equal(got[0], expected)


def _count_runs(monkeypatch) -> list[bool]:
    """A list that gets one entry each time BandedInference computes a run in bands."""
    runs: list[bool] = []
    original = BandedInference._run

    def counted(self, run, x, rows):
        runs.append(True)
        return original(self, run, x, rows)

    monkeypatch.setattr(BandedInference, "_run", counted)
    return runs


@pytest.mark.parametrize("block", [2_000, 10**9], ids=["bands", "one-band"])
def test_seed_002_layers_within_the_rounding_bound(monkeypatch, block: int) -> None:
    """Conv2D -> Tanh -> Flatten -> Dropout -> Dense in float32 against the same model in
    float64 (exact for float32's purposes). The bound follows the numbers: the
    convolution within gamma(C*kh*kw + 1) of its |terms|; tanh moves that error by no
    more (|tanh'| <= 1) and rounds once more (a few ulp); Dense carries each input's error
    times |W| and adds gamma(K + 1) of its own |terms|. The layer-by-layer forward must
    fall within the same bound (the bound is not loose enough to hide a wrong band)."""
    model = dc.Sequential([dc.Conv2D(None, 6, 3, padding="same"), dc.Tanh(), dc.Flatten(), dc.Dropout(0.2),
                           dc.Dense(None, 5)], seed=3)
    x = np.random.default_rng(4).standard_normal((3, 2, 9, 7)).astype(np.float32)
    model.build(x.shape)
    model.eval()
    exact = copy.deepcopy(model).astype(np.float64)
    conv, dense = exact.layers[0], exact.layers[-1]
    x64 = x.astype(np.float64)
    pre = conv.forward(x64)
    magnitude = copy.deepcopy(conv)
    magnitude.params = {k: np.abs(v) for k, v in conv.params.items()}
    conv_error = gamma(2 * 3 * 3 + 1, np.float32) * magnitude.forward(np.abs(x64))
    activation = np.tanh(pre)
    activation_error = conv_error + transcendental(np.float32) * (np.abs(activation) + conv_error)
    a, a_error = activation.reshape(3, -1), activation_error.reshape(3, -1)
    w, b = np.abs(dense.params["weight"]), np.abs(dense.params["bias"])
    y_exact = exact.forward(x64)
    bound = a_error @ w + gamma(a.shape[1] + 1, np.float32) * ((np.abs(a) + a_error) @ w + b)

    layer_by_layer = model.forward(x)
    monkeypatch.setattr(conv_module, "BLOCK_MULTIPLY_ADDS", block)
    runs = _count_runs(monkeypatch)
    banded = forward_batches(model, x, batch_size=3)[0]
    assert runs == [True]
    for name, got in (("banded", banded), ("layer by layer", layer_by_layer)):
        excess = np.abs(got - y_exact) - bound
        assert (excess <= 0).all(), f"{name}: {excess.max():.3g} over the bound"


def test_predict_takes_the_bands_and_keeps_its_batches(monkeypatch) -> None:
    """predict of seed 002's model (its calls run in this process, where the spy is)
    computes every batch in bands, the last one shorter, and returns the outputs of
    those batches in the order of the samples."""
    monkeypatch.setattr(model_module, "run_in_parallel", lambda calls: [f(*args) for f, args in calls])
    runs = _count_runs(monkeypatch)
    model = models.weidman(seed=0)
    x = np.random.default_rng(5).random((70, 1, 28, 28), dtype=np.float32)
    out = model.predict(x, batch_size=32)
    assert len(runs) == 3 and out.shape == (70, 10)
    assert model.training  # as it was before predict
    model.eval()
    assert_array_equal(out, np.concatenate(forward_batches(model, x, 32)))


def test_training_mode_runs_layer_by_layer(monkeypatch) -> None:
    """A forward in training mode (Dropout drops) never takes the bands."""
    runs = _count_runs(monkeypatch)
    model = models.weidman(seed=0)
    x = np.random.default_rng(6).random((4, 1, 28, 28), dtype=np.float32)
    model.build(x.shape)
    model.train()
    assert inference_bands.BandedInference._band_rows(model.layers[0], x) is None
    BandedInference().forward(model.layers, x)
    assert runs == []


def test_banded_numbers_count_a_fused_run_as_its_convolution_and_dense_outputs() -> None:
    """Seed 002's model: the convolution's 32 x 28 x 28 outputs and Dense's 10, not Tanh's,
    Flatten's or Dropout's copies of the activation; LeNet has no such run: every layer's."""
    weidman = models.weidman(seed=0)
    weidman.build((1, 1, 28, 28))
    assert inference_bands.banded_numbers_per_sample(weidman) == 32 * 28 * 28 + 10
    lenet = models.lenet(seed=0)
    lenet.build((1, 1, 28, 28))
    assert inference_bands.banded_numbers_per_sample(lenet) == (6 * 28 * 28 * 2 + 6 * 14 * 14 + 16 * 10 * 10 * 2
                                                                + 16 * 5 * 5 * 2 + 84 * 2 + 10)


@pytest.mark.parametrize("kind, expected", [("threads", 0), ("processes", 1)])
def test_predict_bands_in_processes_not_on_threads(monkeypatch, kind: str, expected: int) -> None:
    """On two threads (sharing the GIL: many short calls wait on each other) predict runs
    layer by layer; with a worker process the calling process's share runs in bands (the
    worker's share runs there, where the spy is not)."""
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    monkeypatch.setattr(dc.threads, "num_threads", lambda: 2)
    monkeypatch.setattr(model_module, "num_threads", lambda: 2)
    runs = _count_runs(monkeypatch)
    model = models.weidman(seed=0)
    model.predict(np.random.default_rng(7).random((40, 1, 28, 28), dtype=np.float32), batch_size=20)
    assert len(runs) == expected
