"""A training batch computed in parts (dualconv/parts.py) on one or two threads.

Oracle: the plain layer code run on each part by itself (a second model with the
same weights, no parts machinery), each part's gradients and loss weighted by its
share of the batch and added in part order, as the batch mean requires. With the
shares 1/2 (two parts of 128) the weights are exact powers of two.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.kernels import dropout_forward
from dualconv.models import lenet, lenet_bn, weidman
from dualconv.parts import in_groups, numbers_per_sample, part_ranges, training_parts
from dualconv.threads import set_num_threads

KEY = 0x5DEE_CE66_0000_0001


def test_numbers_per_sample_adds_up_every_layer_output() -> None:
    """LeNet on 28x28: 6x28x28 (conv, ReLU), 6x14x14, 16x10x10 (conv, ReLU), 16x5x5 (pool,
    Flatten), 84 (Dense, ReLU), 10, worked by hand."""
    model = lenet(seed=0)
    model.build((1, 1, 28, 28))
    assert numbers_per_sample(model) == 2 * 4704 + 1176 + 2 * 1600 + 2 * 400 + 2 * 84 + 10


def test_part_ranges_follow_the_documented_rule() -> None:
    """Worked by hand from the docstring, with 2**20 numbers a part at least and 2**23 and
    128 samples at most, and an even count of parts. 16384 numbers a sample: parts of 64 to
    128 samples (min(128, 512)); 100,000 a sample: 12 to 83 (ceil(10.49) = 11, made even; 83 fit)."""
    assert part_ranges(127, 16384, 2**20) == [(0, 127)]
    assert part_ranges(128, 16384, 2**20) == [(0, 64), (64, 128)]
    assert part_ranges(130, 16384, 2**20) == [(0, 66), (66, 130)]  # 65 -> 66
    # ceil(1030 / 128) = 9 -> 10 parts (even) of ceil(1030 / 10) = 103 -> 104, the last one 94
    assert part_ranges(1030, 16384, 2**20) == [(s, min(1030, s + 104)) for s in range(0, 1030, 104)]
    assert len(part_ranges(1030, 16384, 2**20)) == 10
    # 12,000 a sample: 88 to 128; ceil(260 / 128) = 3 -> 4 parts would hold 65 < 88: 260 // 88 = 2 parts of 130
    assert part_ranges(260, 12000, 2**20) == [(0, 130), (130, 260)]
    # 12,000 a sample, 270 samples: 4 parts would hold 67 < 88; 270 // 88 = 3 -> 2 parts of 136 and 134
    assert part_ranges(270, 12000, 2**20) == [(0, 136), (136, 270)]
    assert part_ranges(256, 14762, 2**18) == [(0, 128), (128, 256)]  # LeNet, processes
    # ceil(384 / 128) = 3 -> 4 parts of 96; ceil(300 / 128) = 3 -> 4 parts of 75 -> 76
    assert part_ranges(384, 14762, 2**18) == [(0, 96), (96, 192), (192, 288), (288, 384)]
    assert part_ranges(300, 14762, 2**18) == [(0, 76), (76, 152), (152, 228), (228, 300)]
    assert part_ranges(64, 100_000, 2**20) == [(0, 32), (32, 64)]
    assert part_ranges(256, 100_000, 2**20) == [(0, 64), (64, 128), (128, 192), (192, 256)]  # ceil(256/83) = 4
    assert part_ranges(23, 100_000, 2**20) == [(0, 23)]  # two parts would hold under 12
    assert part_ranges(36, 100_000, 2**20) == [(0, 18), (18, 36)]
    # fewest 1 -> 2, most 4: ceil(10 / 4) = 3 parts of ceil(10 / 3) = 4
    assert part_ranges(10, 2**21, 2**20) == [(0, 4), (4, 8), (8, 10)]
def test_in_groups_splits_into_consecutive_runs() -> None:
    assert in_groups([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert in_groups([1, 2], 2) == [[1], [2]]
    assert in_groups([1, 2, 3], 1) == [[1, 2, 3]]


@pytest.mark.parametrize("batch_last", [False, True])
def test_dropout_of_a_part_is_that_part_of_the_whole_batch(batch_last: bool) -> None:
    x = np.random.default_rng(1).standard_normal((11, 3, 5)).astype(np.float32)
    if batch_last:
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    y_whole, mask_whole = dropout_forward(x, KEY, 0.4, 0)
    for start, stop in [(0, 4), (4, 11), (2, 3), (10, 11)]:
        y, mask = dropout_forward(x[start:stop], KEY, 0.4, start)
        assert_array_equal(mask, mask_whole[start:stop])
        assert_array_equal(y, y_whole[start:stop])
    with pytest.raises(ValueError, match="dropout_forward: a part of a batch must start at an even sample, got 3"):
        dropout_forward(x[3:], KEY, 0.4, 3)


def _part_by_part(model: dc.Sequential, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int, dict]:
    """The oracle: each part through the plain model code, weighted, summed in order."""
    loss = dc.SoftmaxCrossEntropy()
    total_loss, correct, grads = None, 0, {}
    for layer in model.layers:
        layer.start_parts()
    for start, stop in training_parts(model, len(X)):
        for layer in model.layers:
            layer.enter_part(start)  # Dropout: the whole batch's key, counted from start
        out = model.forward(X[start:stop])
        correct += int((out.argmax(axis=1) == y[start:stop]).sum())
        value = loss.forward(out, y[start:stop])
        model.backward(loss.backward(), input_grad=False)
        w = model.dtype.type((stop - start) / len(X))
        total_loss = value * w if total_loss is None else total_loss + value * w
        for i, layer in enumerate(model.layers):
            for name, g in layer.grads.items():
                grads[(i, name)] = g * w if (i, name) not in grads else grads[(i, name)] + g * w
    for layer in model.layers:
        layer.end_parts()
    return total_loss, correct, grads


@pytest.mark.parametrize("kind", ["processes", "threads"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("make, n", [(lenet, 256), (weidman, 256), (weidman, 66), (lenet, 146), (lenet, 64)])
def test_a_step_in_parts_is_the_weighted_sum_of_its_parts(make, n: int, threads: int, kind: str,
                                                          monkeypatch) -> None:
    """The same bits on one core or two, in a worker process or a worker thread."""
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    rng = np.random.default_rng(3)
    X = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model, oracle = make(seed=5), make(seed=5)
    for m in (model, oracle):
        m.build((1, 1, 28, 28))
        m.seed_randomness(9)
    if kind == "threads" and n == 64:
        assert training_parts(model, n) == [(0, n)]  # LeNet at 64: parts too small for threads
    else:
        assert len(training_parts(model, n)) > 1
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.01))
    set_num_threads(threads)
    try:
        value, correct = trainer.train_step(X, y)
    finally:
        set_num_threads(None)
    expected_loss, expected_correct, expected_grads = _part_by_part(oracle, X, y)
    assert value == expected_loss and int(correct) == expected_correct
    for (i, name), g in expected_grads.items():
        assert_array_equal(model.layers[i].grads[name], g, err_msg=f"layer {i} {name}")


def test_models_whose_layers_couple_samples_train_whole() -> None:
    """BatchNorm's training statistics are over the batch: LeNet-BN never splits one;
    in eval mode it would not couple samples."""
    model = lenet_bn(seed=0)
    model.build((1, 1, 28, 28))
    assert training_parts(model, 256) == [(0, 256)]
    assert not model.layers[1].eval().couples_samples
    assert training_parts(lenet(seed=0).eval(), 256) == [(0, 256)]  # not built yet: builds whole first


def test_a_layer_written_outside_dualconv_keeps_batches_whole_until_it_says_otherwise() -> None:
    class Centre(dc.Layer):
        """Subtracts the batch mean: each sample's output depends on the others."""

        def _forward(self, x):
            self._cache = x.shape
            return x - x.mean(axis=0)

        def _backward(self, gy):
            return gy - gy.mean(axis=0)

    model = dc.Sequential([dc.Flatten(), Centre(), dc.Dense(None, 10)], seed=0)
    model.build((1, 1, 28, 28))
    assert training_parts(model, 4096) == [(0, 4096)]

    class PerSample(Centre):
        couples_samples = False

    model = dc.Sequential([dc.Flatten(), PerSample(), dc.Dense(None, 10)], seed=0)
    model.build((1, 1, 28, 28))
    assert len(training_parts(model, 4096)) > 1  # 1578 numbers a sample: parts of 666 and more


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_predict_batch_size_is_the_largest_power_of_two_under_its_budget(kind, monkeypatch) -> None:
    """Threads, 2**23 numbers and 16 samples at least: LeNet (14,762 a sample, 568 fit) is
    held to the most given, 128; weidman (100,362 a sample, 83 fit) gets 64; a model making
    2**22 a sample gets 16. Processes, 2**21 numbers and 32 samples at least: LeNet 142
    fit, 128; weidman, whose forward runs in bands there (25,098 numbers a sample:
    inference_bands.banded_numbers_per_sample), 83 fit, 64."""
    from dualconv.parts import predict_batch_size
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    model = lenet(seed=0)
    model.build((1, 1, 28, 28))
    if kind == "threads":
        assert predict_batch_size(model, 128) == 128 and predict_batch_size(model, 1000) == 512
    else:
        assert predict_batch_size(model, 128) == 128 and predict_batch_size(model, 1000) == 128
        assert predict_batch_size(model, 100) == 100 and predict_batch_size(model, 8) == 8  # never past the most
    model = weidman(seed=0)
    model.build((1, 1, 28, 28))
    assert numbers_per_sample(model) == 4 * 25088 + 10
    assert predict_batch_size(model, 128) == 64
    big = dc.Sequential([dc.Flatten()], seed=0)  # 2**22 numbers a sample: 2 would fit
    big.build((1, 1, 2048, 2048))
    assert predict_batch_size(big, 128) == (16 if kind == "threads" else 32)
