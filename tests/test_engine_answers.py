"""A worker's answers unpacked once (dualconv/engine/arena.py, Answers): an answer that
packs to the same bytes as one before gives the objects unpacked then, whose arrays are
views of the results region and so read the new answer's values."""
from __future__ import annotations

import mmap

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dualconv.engine import arena, workers
from dualconv.engine.arena import Answers, Replies, pack, unpack


def _region(size: int = 2**20) -> np.ndarray:
    return np.frombuffer(mmap.mmap(-1, size), np.uint8)


def _answer(shape: tuple[int, ...], value: float) -> tuple[bool, tuple[str, list[np.ndarray]], int]:
    return True, ("filled", [np.full(shape, value, np.float32), np.arange(3000) * value]), 0


def test_answers_of_one_form_are_unpacked_once_and_read_each_ones_values(monkeypatch) -> None:
    """Forms interleaved as a step's forward and backward answers are: each form unpacked
    once, and every answer read right, also after another form wrote over the region."""
    unpacked = []
    real = arena.unpack
    monkeypatch.setattr(arena, "unpack", lambda *args, **kw: unpacked.append(1) or real(*args, **kw))
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
def test_a_worker_answering_alike_is_unpacked_once(monkeypatch) -> None:
    unpacked = []
    real = arena.unpack
    monkeypatch.setattr(arena, "unpack", lambda *args, **kw: unpacked.append(1) or real(*args, **kw))
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
                           (float, "-0x0.0p+0")))
    assert [id(a) for a in arrays] == [id(w), id(b)]
    assert arena.form((0.0,))[0] != arena.form((-0.0,))[0]
    assert arena.form([1])[0] != arena.form((1,))[0]
    assert arena.form((True, 1))[0] != arena.form((1, 1))[0]


@pytest.mark.parametrize("obj", [(np.zeros(3), "x", None)[:1] * 2, (np.array([None]),), (np.float32(1),),
                                 (object(),), ([[]] * 2,)])
def test_form_refuses_what_it_cannot_describe(obj) -> None:
    """The same array or container twice, an array of objects, a NumPy scalar, any other object."""
    assert arena.form(obj) is None


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
