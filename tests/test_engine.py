"""The CPU engine (dualconv/engine): where a batch splits, and a forward and backward in
parts equal, bit for bit, to the plain layer code run on each part by itself.

Oracle: deep copies of the model's layers, one per part, each given the part's first
sample, run through the textbook loops (kernels/reference.py); the whole batch's loss on
the joined outputs; each part's backward on its rows of the loss gradient; the parts'
gradients added in part order. It shares no code with the engine's passes.
"""
from __future__ import annotations

import copy
import os
import signal

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.engine import passes, workers
from dualconv.engine.cores import set_num_threads
from dualconv.engine.parts import in_groups, numbers_per_sample, part_ranges
from dualconv.kernels import dropout_forward, reference
from dualconv.model import run_order
from dualconv.models import lenet, lenet_bn, weidman

KEY = 0x5DEE_CE66_0000_0001


def test_numbers_per_sample_adds_up_every_layer_output() -> None:
    """LeNet on 28x28: 6x28x28 (conv, ReLU), 6x14x14, 16x10x10 (conv, ReLU), 16x5x5 (pool,
    Flatten), 84 (Dense, ReLU), 10, worked by hand."""
    model = lenet(seed=0)
    model.build((1, 1, 28, 28))
    assert numbers_per_sample(model.layers, (1, 28, 28)) == 2 * 4704 + 1176 + 2 * 1600 + 2 * 400 + 2 * 84 + 10


def test_part_ranges_follow_the_documented_rule() -> None:
    """Worked by hand from the docstring, with 2**20 numbers a part at least and 2**23 and
    128 samples at most, and an even count of parts. 16384 numbers a sample: parts of 64 to
    128 samples (min(128, 512)); 100,000 a sample: 12 to 83 (ceil(10.49) = 11, made even; 83 fit)."""
    assert part_ranges(127, 16384, 2**20) == [(0, 127)]
    assert part_ranges(128, 16384, 2**20) == [(0, 64), (64, 128)]
    assert part_ranges(130, 16384, 2**20) == [(0, 66), (66, 130)]  # 65 -> 66
    # ceil(1030 / 128) = 9 -> 10 parts (even) of ceil(1030 / 10) = 103 -> 104, the last one 94
    assert part_ranges(1030, 16384, 2**20) == [(s, min(1030, s + 104)) for s in range(0, 1030, 104)]
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


def _oracle(model: dc.Sequential, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict]:
    """The batch's loss and gradients from the plain layer code, part by part."""
    order = run_order(model.layers)
    ranges = passes.split(order, X)
    copies = [copy.deepcopy(order) for _ in ranges]
    for layers, (start, _) in zip(copies, ranges):
        for layer in layers:
            layer.first_sample = start
    out = np.concatenate([reference.layers_forward(layers, X[a:b]) for layers, (a, b) in zip(copies, ranges)])
    loss = dc.SoftmaxCrossEntropy()
    value = loss.forward(out, y)
    gy = loss.backward()
    grads: dict = {}
    for layers, (a, b) in zip(copies, ranges):
        reference.layers_backward(layers, gy[a:b], input_grad=False)
        for i, layer in enumerate(layers):
            for name, g in layer.grads.items():
                grads[(i, name)] = g if (i, name) not in grads else grads[(i, name)] + g
    return value, grads


@pytest.mark.parametrize("kind", ["processes", "threads"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("make, n", [(lenet, 256), (weidman, 256), (weidman, 66), (lenet, 300), (lenet, 64)])
def test_a_step_in_parts_equals_the_plain_code_on_each_part(make, n: int, threads: int, kind: str,
                                                            monkeypatch) -> None:
    """The same bits on one core or two, in a worker process or a worker thread, through
    Trainer.train_step and through a user's own loop."""
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    rng = np.random.default_rng(3)
    X = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model, mine, oracle = make(seed=5), make(seed=5), make(seed=5)
    for m in (model, mine, oracle):
        m.build((1, 1, 28, 28))
        m.seed_randomness(9)
    ranges = passes.split(run_order(model.layers), X)
    assert len(ranges) > 1
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.01))
    loss = dc.SoftmaxCrossEntropy()
    set_num_threads(threads)
    try:
        value, _ = trainer.train_step(X, y)
        own_value = loss.forward(mine.forward(X), y)
        mine.backward(loss.backward())
    finally:
        set_num_threads(None)
    expected_loss, expected_grads = _oracle(oracle, X, y)
    assert value == expected_loss == own_value
    order, own_order = run_order(model.layers), run_order(mine.layers)
    for (i, name), g in expected_grads.items():
        assert_array_equal(order[i].grads[name], g, err_msg=f"layer {i} {name}")
        assert_array_equal(own_order[i].grads[name], g, err_msg=f"own loop: layer {i} {name}")


@pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")
def test_a_users_own_loop_runs_a_part_in_a_worker_and_a_worker_lost_before_the_backward_changes_nothing(
        monkeypatch) -> None:
    """model.forward leaves the second part's state in a worker process; killed before
    model.backward, the caller recomputes that part: the same gradients and input gradient."""
    monkeypatch.setenv("DUALCONV_WORKERS", "processes")
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "2")
    rng = np.random.default_rng(4)
    X, y = rng.random((256, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 256)
    grads, gxs = [], []
    for kill in (False, True):
        model, loss = lenet(seed=1), dc.SoftmaxCrossEntropy()
        loss.forward(model.forward(X), y)
        done = passes._pending[tuple(map(id, run_order(model.layers)))]
        remote = [run for run in done.runs if run.worker is not None]
        assert len(remote) == 1, "the second part runs in a worker process"
        if kill:
            pid = remote[0].worker.process.pid
            os.kill(pid, signal.SIGKILL)
            remote[0].worker.process.join(timeout=60)
        gxs.append(model.backward(loss.backward()))
        grads.append({(i, k): g for i, layer in enumerate(model.layers) for k, g in layer.grads.items()})
    assert gxs[0].shape == X.shape
    assert_array_equal(gxs[0], gxs[1])
    for key, g in grads[0].items():
        assert_array_equal(grads[1][key], g, err_msg=str(key))


def test_models_whose_layers_couple_samples_run_whole() -> None:
    """BatchNorm's training statistics are over the batch: LeNet-BN never splits one in
    training; in eval mode it does not couple samples."""
    model = lenet_bn(seed=0)
    model.build((1, 1, 28, 28))
    X = np.zeros((256, 1, 28, 28), np.float32)
    assert passes.split(model.layers, X) == [(0, 256)]
    model.eval()
    assert len(passes.split(model.layers, X)) == 2


def test_a_layer_written_outside_dualconv_keeps_batches_whole_until_it_says_otherwise() -> None:
    class Centre(dc.Layer):
        """Subtracts the batch mean: each sample's output depends on the others."""

        def _forward(self, x):
            self._cache = x.shape
            return x - x.mean(axis=0)

        def _backward(self, gy):
            return gy - gy.mean(axis=0)

    X = np.zeros((4096, 1, 28, 28), np.float32)
    model = dc.Sequential([dc.Flatten(), Centre(), dc.Dense(None, 10)], seed=0)
    model.build((1, 1, 28, 28))
    assert passes.split(model.layers, X) == [(0, 4096)]

    class PerSample(Centre):
        couples_samples = False

    model = dc.Sequential([dc.Flatten(), PerSample(), dc.Dense(None, 10)], seed=0)
    model.build((1, 1, 28, 28))
    assert len(passes.split(model.layers, X)) > 1  # 1578 numbers a sample: parts of 666 and more


def test_an_eval_mode_forward_in_parts_back_propagates_like_the_plain_loop() -> None:
    """Eval mode splits a batch too (predict); a backward after it (an input gradient of a
    trained model) gives what the plain loops give on each part."""
    X = np.random.default_rng(6).random((512, 1, 28, 28), dtype=np.float32)
    gy = np.random.default_rng(7).random((512, 10), dtype=np.float32)
    model, oracle = lenet(seed=3).eval(), lenet(seed=3).eval()
    out = model.forward(X)
    gx = model.backward(gy)
    order = run_order(oracle.layers)
    oracle.build(X.shape)
    ranges = passes.split(order, X)
    assert len(ranges) > 1
    expected_out, expected_gx = [], []
    for start, stop in ranges:
        layers = copy.deepcopy(order)
        expected_out.append(reference.layers_forward(layers, X[start:stop]))
        expected_gx.append(reference.layers_backward(layers, gy[start:stop]))
    assert_array_equal(out, np.concatenate(expected_out))
    assert_array_equal(gx, np.concatenate(expected_gx))


def _trained_weights(n: int, batch: int) -> dict:
    """LeNet's weights after three SGD steps on n images, at this batch size."""
    rng = np.random.default_rng(8)
    X, y = rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)
    model = lenet(seed=4)
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.05, momentum=0.9),
                         progress=False)
    trainer.fit(X, y, epochs=1, batch_size=batch, seed=2)
    return model.state_dict()


@pytest.mark.parametrize("batch", [100, 112, 256])
def test_one_result_for_one_seed_on_one_core_or_two_with_processes_or_threads_whatever_the_blas(
        batch: int, monkeypatch) -> None:
    """The same weights with one core or two, worker processes or threads, and NumPy's BLAS
    on one thread or two: the engine holds the BLAS at one thread, and the parts depend on
    the batch and the model alone."""
    from threadpoolctl import threadpool_limits
    results = []
    for threads, kind, blas in [(2, "processes", 2), (1, "processes", 2), (2, "threads", 2), (2, "processes", 1)]:
        monkeypatch.setenv("DUALCONV_WORKERS", kind)
        set_num_threads(threads)
        try:
            with threadpool_limits(limits=blas, user_api="blas"):
                results.append(_trained_weights(3 * batch, batch))
        finally:
            set_num_threads(None)
    for other in results[1:]:
        for name, w in results[0].items():
            assert_array_equal(other[name], w, err_msg=name)


@pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")
def test_two_models_trained_in_turns_get_their_own_gradients(monkeypatch) -> None:
    """forward A, forward B, backward A, backward B: B's forward replaces what the worker
    kept of A's, so A's part is recomputed by the caller; both get the gradients of a
    forward and backward run back to back."""
    monkeypatch.setenv("DUALCONV_WORKERS", "processes")
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "2")
    rng = np.random.default_rng(9)
    X, y = rng.random((256, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 256)

    def grads(model: dc.Sequential) -> dict:
        return {(i, k): g for i, layer in enumerate(model.layers) for k, g in layer.grads.items()}

    expected = []
    for seed in (1, 2):
        model, loss = lenet(seed=seed), dc.SoftmaxCrossEntropy()
        loss.forward(model.forward(X), y)
        model.backward(loss.backward(), input_grad=False)
        expected.append(grads(model))
    a, b = lenet(seed=1), lenet(seed=2)
    loss_a, loss_b = dc.SoftmaxCrossEntropy(), dc.SoftmaxCrossEntropy()
    loss_a.forward(a.forward(X), y)
    loss_b.forward(b.forward(X), y)
    a.backward(loss_a.backward(), input_grad=False)
    b.backward(loss_b.backward(), input_grad=False)
    for model, want in zip((a, b), expected):
        got = grads(model)
        for key, g in want.items():
            assert_array_equal(got[key], g, err_msg=str(key))
