"""The engine's settings and threads (dualconv/engine/cores.py), and the BLAS held at
one thread while a batch's parts run, then given back as it was."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import dualconv as dc
from dualconv.engine import cores, workers
from dualconv.models import lenet


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_takes_positive_ints_only(bad) -> None:
    with pytest.raises(ValueError, match="set_num_threads: expected a positive int or None"):
        cores.set_num_threads(bad)


def test_the_environment_sets_the_default(monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "3")
    assert cores.num_threads() == 3
    cores.set_num_threads(1)
    assert cores.num_threads() == 1  # the call wins
    cores.set_num_threads(None)
    assert cores.num_threads() == 3
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "0")
    with pytest.raises(ValueError, match="DUALCONV_NUM_THREADS must be a positive integer, got '0'"):
        cores.num_threads()


def test_the_worker_kind_setting(monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", "threads")
    assert cores.worker_kind() == "threads"
    monkeypatch.setenv("DUALCONV_WORKERS", "")
    assert cores.worker_kind() == ("processes" if workers.available() else "threads")
    monkeypatch.setenv("DUALCONV_WORKERS", "fibers")
    with pytest.raises(ValueError, match="DUALCONV_WORKERS must be 'processes' or 'threads', got 'fibers'"):
        cores.worker_kind()


def test_worker_threads_run_at_once() -> None:
    all_started = threading.Barrier(3, timeout=30)  # passes only if the three run at once
    assert cores.run_on_threads([lambda: all_started.wait() is not None] * 3) == [True] * 3


def _fail() -> int:
    raise RuntimeError("boom")


def test_a_failing_task_raises_after_all_finish() -> None:
    done = []
    with pytest.raises(RuntimeError, match="boom"):
        cores.run_on_threads([_fail, lambda: done.append(threading.Event().wait(0.05))])
    assert done == [False]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_runs_tasks_on_threads_of_its_own() -> None:
    import multiprocessing
    assert cores.run_on_threads([lambda: 1, lambda: 2]) == [1, 2]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(cores.run_on_threads, ([_one, _two],)).get(timeout=60) == [1, 2]


def _one() -> int:
    return 1


def _two() -> int:
    return 2


class _BlasSeen(dc.Layer):
    """Records the BLAS threads each forward and backward sees (sample by sample)."""

    couples_samples = False
    seen: list[list[int]] = []

    def _forward(self, x):
        _BlasSeen.seen.append(_blas_threads())
        self._cache = x.shape
        return x

    def _backward(self, gy):
        _BlasSeen.seen.append(_blas_threads())
        return gy


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_parts_run_with_the_blas_on_one_thread_and_it_is_given_back(kind, monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    X = np.random.default_rng(0).random((4096, 1, 28, 28), dtype=np.float32)
    model = dc.Sequential([dc.Flatten(), _BlasSeen(), dc.Dense(None, 10)], seed=0)
    loss = dc.SoftmaxCrossEntropy()
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        _BlasSeen.seen = []
        loss.forward(model.forward(X), np.zeros(4096, np.int64))
        model.backward(loss.backward())
        assert _blas_threads() == before
    assert _BlasSeen.seen and all(seen == [1] * len(before) for seen in _BlasSeen.seen)


@pytest.mark.parametrize("found", [1, 2])
def test_the_blas_gets_back_the_count_it_had_even_one(found) -> None:
    """The count the first caller found comes back on exit, also where it was 1 and the
    block set another (nested blocks and an exception inside give it back too)."""
    with threadpool_limits(limits=found, user_api="blas"):
        before = _blas_threads()
        with cores.blas_on_one_thread():
            with cores.blas_on_one_thread():
                assert _blas_threads() == [1] * len(before)
            threadpool_limits(limits=3, user_api="blas")
        assert _blas_threads() == before
        with pytest.raises(RuntimeError):
            with cores.blas_on_one_thread():
                raise RuntimeError
        assert _blas_threads() == before


def _inner_predict(x):
    return lenet(seed=0).predict(x).sum(axis=1, keepdims=True)


class _PredictsInside(dc.Layer):
    """A layer whose forward runs a model of its own (a model inside a model)."""

    couples_samples = False

    def _forward(self, x):
        self._cache = x.shape
        return _inner_predict(x.reshape(-1, 1, 28, 28)).astype(x.dtype)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_model_inside_a_layer_gets_its_results_without_waiting_forever(kind, monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    X = np.random.default_rng(1).random((512, 1, 28, 28), dtype=np.float32)
    model = dc.Sequential([dc.Flatten(), _PredictsInside()], seed=0)
    results = []
    caller = threading.Thread(target=lambda: results.append(model.predict(X)), daemon=True)
    caller.start()
    caller.join(timeout=120)
    assert not caller.is_alive(), "a model inside a model waits forever"
    np.testing.assert_allclose(results[0], _inner_predict(X), rtol=1e-5)


def test_the_default_takes_what_the_parallelism_around_it_left(monkeypatch) -> None:
    """OMP_NUM_THREADS (set by joblib and loky in their workers) caps the default; a
    multiprocessing.Pool's worker, whose siblings share the cores, uses one; an explicit
    DUALCONV_NUM_THREADS still wins."""
    import multiprocessing
    monkeypatch.delenv("DUALCONV_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cores.num_threads() == 1
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "2")
    assert cores.num_threads() == 2
    monkeypatch.delenv("DUALCONV_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(cores.num_threads).get(timeout=60) == 1
