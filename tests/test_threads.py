"""dualconv's worker threads (dualconv/threads.py): the setting, results in order, and
the BLAS held at one thread while they run, then given back as it was."""
from __future__ import annotations

import threading

import pytest
from threadpoolctl import threadpool_info

from dualconv import threads


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_takes_positive_ints_only(bad) -> None:
    with pytest.raises(ValueError, match="set_num_threads: expected a positive int or None"):
        threads.set_num_threads(bad)


def test_the_environment_sets_the_default(monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "3")
    assert threads.num_threads() == 3
    threads.set_num_threads(1)
    assert threads.num_threads() == 1  # the call wins
    threads.set_num_threads(None)
    assert threads.num_threads() == 3
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "0")
    with pytest.raises(ValueError, match="DUALCONV_NUM_THREADS must be a positive integer, got '0'"):
        threads.num_threads()


def test_tasks_run_on_their_own_threads_with_the_blas_on_one_and_results_in_order() -> None:
    before = _blas_threads()
    assert before, "NumPy's BLAS should be visible to threadpoolctl"

    all_started = threading.Barrier(3, timeout=30)  # passes only if the three run at once

    def task(i: int):
        return lambda: (i, all_started.wait() is not None, threading.get_ident(), _blas_threads())

    results = threads.run_on_threads([task(i) for i in range(3)])
    assert [r[0] for r in results] == [0, 1, 2]
    assert results[0][2] == threading.get_ident() and len({r[2] for r in results}) == 3
    assert all(r[3] == [1] * len(before) for r in results)
    assert _blas_threads() == before


def test_a_failing_task_raises_after_all_finish_and_the_blas_is_restored() -> None:
    before = _blas_threads()
    done = []

    def slow() -> int:
        threading.Event().wait(0.05)
        done.append(True)
        return 1

    def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        threads.run_on_threads([fail, slow])
    assert done == [True]
    assert _blas_threads() == before


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_runs_tasks_on_threads_of_its_own() -> None:
    """After the parent has used its workers, a child forked from it (multiprocessing's
    default on Linux) still gets its tasks done: it starts its own workers."""
    import multiprocessing

    assert threads.run_on_threads([lambda: 1, lambda: 2]) == [1, 2]
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(threads.run_on_threads, ([_one, _two],))
        assert result.get(timeout=60) == [1, 2]


def _one() -> int:
    return 1


def _two() -> int:
    return 2


def test_a_task_that_asks_for_threads_itself_gets_its_results_without_waiting_forever() -> None:
    """The workers are busy with the outer tasks, so the inner ones run in turn where
    they were asked for (a model predicting inside a layer of a model trained in parts)."""
    def outer(i: int):
        return lambda: threads.run_on_threads([lambda: (i, "a"), lambda: (i, "b")])

    results = []
    caller = threading.Thread(target=lambda: results.append(threads.run_on_threads([outer(0), outer(1)])),
                              daemon=True)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "nested run_on_threads waits forever"
    assert results == [[[(0, "a"), (0, "b")], [(1, "a"), (1, "b")]]]
