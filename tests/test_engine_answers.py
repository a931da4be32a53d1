"""A worker's answers unpacked once (dualconv/engine/arena.py, Answers): an answer that
packs to the same bytes as one before gives the objects unpacked then, whose arrays are
views of the results region and so read the new answer's values."""
from __future__ import annotations

import mmap

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dualconv.engine import arena, set_num_threads, workers
from dualconv.engine.arena import Answers, Replies, pack, unpack
from dualconv.losses import SoftmaxCrossEntropy
from dualconv.models import lenet


@pytest.fixture
def unpacked(monkeypatch) -> list:
    """One entry per arena.unpack call while the test runs (Answers unpacks through it)."""
    calls: list = []
    real = arena.unpack
    monkeypatch.setattr(arena, "unpack", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    return calls


def _region(size: int = 2**20) -> np.ndarray:
    return np.frombuffer(mmap.mmap(-1, size), np.uint8)


def _answer(shape: tuple[int, ...], value: float) -> tuple[bool, tuple[str, list[np.ndarray]], int]:
    return True, ("filled", [np.full(shape, value, np.float32), np.arange(3000) * value]), 0


def test_answers_of_one_form_are_unpacked_once_and_read_each_ones_values(unpacked) -> None:
    """Forms interleaved as a step's forward and backward answers are: each form unpacked
    once, and every answer read right, also after another form wrote over the region."""
    region = _region()
    answers = Answers(region, most=4)
    for shape, value in [((500,), 1.0), ((500,), 2.0), ((40, 40), 3.0), ((500,), 4.0), ((40, 40), 5.0)]:
        message, _ = pack(_answer(shape, value), region)
        ok, (tag, (filled, counted)), needed = answers.unpack(message)
        assert ok and tag == "filled" and needed == 0 and filled.shape == shape
        assert_array_equal(filled, np.full(shape, value, np.float32))
        assert_array_equal(counted, np.arange(3000) * value)
    assert len(unpacked) == 2  # one per form


def test_exceptions_are_not_kept_and_at_most_most_answers_are() -> None:
    region = _region()
    answers = Answers(region, most=2)
    failed, _ = pack((False, ValueError("Conv2D: bad input"), 0), region)
    answers.unpack(failed)
    assert not answers.kept
    for n in (10, 20, 30):
        answers.unpack(pack(_answer((n,), 1.0), region)[0])
        assert 1 <= len(answers.kept) <= 2
    answers.clear()
    assert not answers.kept


def _filled(shape: tuple[int, ...], value: float) -> tuple[str, list[np.ndarray]]:
    return _answer(shape, value)[1]


@pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")
def test_a_worker_answering_alike_is_unpacked_once(unpacked) -> None:
    worker = workers.ready_workers(1, check_code=False)[0]
    worker.answers.clear()
    for value in (1.0, 2.0, 3.0):
        assert worker.start((_filled, ((64,), value)))
        ok, (_, (filled, _)) = worker.finish()
        assert ok and np.shares_memory(filled, worker.results_half)
        assert_array_equal(filled, np.full(64, value, np.float32))
    assert len(unpacked) == 1


def test_form_names_containers_keys_plain_values_and_array_shapes() -> None:
    w, b = np.zeros((2, 3), np.float32), np.arange(4)
    key, arrays = arena.form((True, [{"w": w, "b": b}, None], 0, -0.0))
    entries = (((str, "w"), ((2, 3), "<f4")), ((str, "b"), ((4,), b.dtype.str)))
    assert key == (tuple, ((bool, True), (list, ((dict, entries), (type(None), None))), (int, 0),
                           (float, b"\x00\x00\x00\x00\x00\x00\x00\x80")))  # -0.0: the sign bit
    assert [id(a) for a in arrays] == [id(w), id(b)]
    assert arena.form((0.0,))[0] != arena.form((-0.0,))[0]
    assert arena.form([1])[0] != arena.form((1,))[0]
    assert arena.form((True, 1))[0] != arena.form((1, 1))[0]


@pytest.mark.parametrize("obj", [(np.zeros(3), "x", None)[:1] * 2, (np.array([None]),), (np.float32(1),),
                                 (object(),), ([[]] * 2,), (np.zeros(2, [("w", "<f4"), ("b", "<f4")]),),
                                 (np.zeros(2, np.dtype(np.float32, metadata={"unit": "m"})),)])
def test_form_refuses_what_it_cannot_describe(obj) -> None:
    """The same array or container twice, an array of objects or records (every record dtype
    of 8 bytes has the str '|V8'), a dtype with metadata, a NumPy scalar, any other object."""
    assert arena.form(obj) is None


def test_form_tells_floats_apart_by_their_bits() -> None:
    nan = float("nan")
    assert arena.form((nan,))[0] != arena.form((-nan,))[0]
    assert arena.form((nan,))[0] == arena.form((float("nan"),))[0]


class _Summary:
    """An object whose unpickling runs its own code (it keeps the mean of what it gets)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.mean = values, float(values.mean())

    def __reduce__(self):
        return _Summary, (self.values,)


def test_an_answer_whose_unpickling_runs_code_is_unpacked_every_time() -> None:
    region = _region()
    answers = Answers(region, most=4)
    for value in (1.0, 2.0):
        message, _ = pack((True, _Summary(np.full(500, value)), 0), region)
        assert answers.unpack(message)[1].mean == value
    assert not answers.kept


def test_replies_pack_a_form_once_and_its_message_reads_each_objects_values(monkeypatch) -> None:
    packed = []
    real = arena.pack
    monkeypatch.setattr(arena, "pack", lambda *args, **kw: packed.append(1) or real(*args, **kw))
    region = _region()
    replies = Replies(region, most=4)
    first = replies.pack(_answer((500,), 1.0))
    for shape, value in [((500,), 2.0), ((40, 40), 3.0), ((500,), 4.0)]:
        message = replies.pack(_answer(shape, value))
        ok, (tag, (filled, counted)), _ = unpack(message, region, copy=True)
        assert ok and tag == "filled"
        assert_array_equal(filled, np.full(shape, value, np.float32))
        assert_array_equal(counted, np.arange(3000) * value)
    assert message == first and len(packed) == 2  # one per form
    replies.pack((True, ValueError("no form"), 0))
    replies.pack((True, ValueError("no form"), 0))
    assert len(packed) == 4
    with pytest.raises(arena.TooLarge):
        replies.pack((True, np.zeros(2**20), 0))


@pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")
def test_a_training_step_in_parts_unpacks_no_answer_after_the_first_steps(monkeypatch, unpacked) -> None:
    """The forward answer (the token as an array, the part's outputs) and the backward answer
    (the gradients) are the same bytes every step, so the caller unpacks neither after the
    first steps; the backward call keeps no gy (each call brings its own)."""
    monkeypatch.setenv("DUALCONV_WORKERS", "processes")
    rng = np.random.default_rng(4)
    X, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
    model, loss = lenet(seed=0), SoftmaxCrossEntropy()
    set_num_threads(2)
    try:
        for step in range(6):
            if step == 3:
                unpacked.clear()
            loss.forward(model.forward(X * (step + 1)), y)
            model.backward(loss.backward(), input_grad=False)
    finally:
        set_num_threads(None)
    assert not unpacked
    kept = [worker.kept[1] for worker in workers.workers if worker.kept[1] is not None]
    assert kept and all(array is None for packed in kept for array in packed.arrays)


def _scribble() -> np.ndarray:
    return np.full(2**16, np.nan, np.float32)


class _LockThenAnotherCall:
    """workers.lock, but as soon as it is released another call goes through every idle
    worker (what a second thread would do once the lock is free): its answer lands in the
    results region over the one before."""

    def __init__(self, lock) -> None:
        self.lock = lock

    def acquire(self, blocking: bool = True) -> bool:
        return self.lock.acquire(blocking)

    def release(self) -> None:
        self.lock.release()
        for worker in list(workers.workers):
            if not worker.busy and worker.start((_scribble, ())):
                worker.finish()


@pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")
def test_the_parts_are_joined_and_summed_before_another_call_can_use_the_worker(monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", "processes")
    rng = np.random.default_rng(5)
    X, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
    results = []
    for threads in (1, 2):
        model, loss = lenet(seed=0), SoftmaxCrossEntropy()
        set_num_threads(threads)
        if threads == 2:
            monkeypatch.setattr(workers, "lock", _LockThenAnotherCall(workers.lock))
        try:
            for _ in range(3):
                out = model.forward(X)
                loss.forward(out, y)
                gx = model.backward(loss.backward())
        finally:
            set_num_threads(None)
        results.append((out, gx, [dict(layer.grads) for layer in model.layers]))
    (out, gx, grads), (out_one, gx_one, grads_one) = results[1], results[0]
    assert_array_equal(out, out_one)
    assert_array_equal(gx, gx_one)
    for mine, oracle in zip(grads, grads_one):
        for name, g in oracle.items():
            assert_array_equal(mine[name], g, err_msg=name)
