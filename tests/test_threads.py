"""dualconv's workers (dualconv/threads.py): the settings, results in order, and the
BLAS held at one thread while they run, then given back as it was, for worker
threads and worker processes alike."""
from __future__ import annotations

import os
import threading

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from dualconv import processes, threads


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


def _where(i: int) -> tuple[int, int, int, list[int]]:
    return i, os.getpid(), threading.get_ident(), _blas_threads()


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_calls_run_on_their_own_workers_with_the_blas_on_one_and_results_in_order(kind, monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    if kind == "processes" and not processes.available():
        pytest.skip("worker processes need Linux (fork)")
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert before and all(n == 2 for n in before), "NumPy's BLAS should be visible to threadpoolctl"
        results = threads.run_in_parallel([(_where, (i,)) for i in range(3)])
        assert _blas_threads() == before
    assert [r[0] for r in results] == [0, 1, 2]
    assert results[0][1:3] == (os.getpid(), threading.get_ident())
    if kind == "threads":
        assert {r[1] for r in results} == {os.getpid()}
        assert threading.get_ident() not in {r[2] for r in results[1:]}
    else:
        assert len({r[1] for r in results}) == 3
    assert all(r[3] == [1] * len(before) for r in results)


def test_worker_threads_run_at_once() -> None:
    all_started = threading.Barrier(3, timeout=30)  # passes only if the three run at once
    results = threads.run_on_threads([lambda: all_started.wait() is not None] * 3)
    assert results == [True] * 3


def _sleep_then_mark(path: str) -> int:
    threading.Event().wait(0.05)
    with open(path, "w") as f:
        f.write("done")
    return 1


def _fail() -> int:
    raise RuntimeError("boom")


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_failing_call_raises_after_all_finish_and_the_blas_is_restored(kind, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        with pytest.raises(RuntimeError, match="boom"):
            threads.run_in_parallel([(_fail, ()), (_sleep_then_mark, (str(tmp_path / "mark"),))])
        assert (tmp_path / "mark").read_text() == "done"
        assert _blas_threads() == before


def test_the_worker_kind_setting(monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", "threads")
    assert threads.worker_kind() == "threads"
    monkeypatch.setenv("DUALCONV_WORKERS", "")
    assert threads.worker_kind() == ("processes" if processes.available() else "threads")
    monkeypatch.setenv("DUALCONV_WORKERS", "fibers")
    with pytest.raises(ValueError, match="DUALCONV_WORKERS must be 'processes' or 'threads', got 'fibers'"):
        threads.worker_kind()


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


def _nested(i: int) -> list[tuple[int, str]]:
    return threads.run_in_parallel([(_pair, (i, "a")), (_pair, (i, "b"))])


def _pair(i: int, s: str) -> tuple[int, str]:
    return i, s


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_call_that_asks_for_workers_itself_gets_its_results_without_waiting_forever(kind, monkeypatch) -> None:
    """The workers are busy with the outer calls, so the inner ones run in turn where
    they were asked for (a model predicting inside a layer of a model trained in parts)."""
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    results = []
    caller = threading.Thread(target=lambda: results.append(threads.run_in_parallel([(_nested, (0,)), (_nested, (1,))])),
                              daemon=True)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "nested run_in_parallel waits forever"
    assert results == [[[(0, "a"), (0, "b")], [(1, "a"), (1, "b")]]]
