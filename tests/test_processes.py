"""dualconv's worker processes (dualconv/processes.py): calls and their arrays travel
to a forked worker and back intact, errors and dead workers reach the caller as
documented, and an interrupted caller never reads a stale result."""
from __future__ import annotations

import os
import signal
import time
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dualconv import processes

pytestmark = pytest.mark.skipif(not processes.available(), reason="worker processes need Linux (fork)")


def _pid() -> int:
    return os.getpid()


def _doubled(arrays: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    return os.getpid(), [a * 2 for a in arrays]



def _fail(message: str) -> None:
    raise ValueError(message)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not this one")


def _fail_unpicklably() -> None:
    raise _Unpicklable("deep inside")


def _call(function) -> object:
    return function()


def _exit_unless_in(pid: int) -> str:
    if os.getpid() != pid:
        os._exit(3)  # a worker dying in the middle of a call
    return "ran in the caller"


def _sleep_then_mark(seconds: float, path: str, value: int) -> int:
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("done")
    return value


def _interrupt() -> None:
    raise KeyboardInterrupt


def _ones(n: int) -> np.ndarray:
    return np.ones(n, np.float32)


def _echo(arrays: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    return os.getpid(), arrays


def test_calls_run_in_another_process_and_arrays_come_back_intact() -> None:
    """Large arrays through the arena, small ones inside the pickle, views and
    structured and object arrays: each comes back equal, with its dtype and shape."""
    rng = np.random.default_rng(0)
    big = rng.random((300, 1000), dtype=np.float32)
    records = np.zeros(400, dtype=[("a", np.int32), ("b", np.float64)])
    records["a"], records["b"] = np.arange(400), np.arange(400) / 3
    arrays = [big, big[::2, ::3], big.T, rng.integers(0, 9, 7), np.full((), 2.5),
              rng.random(5000) < 0.5, np.arange(6000, dtype=np.uint8).reshape(60, 100),
              records, np.array([None, "x"], dtype=object)]
    (here, _), (there, back) = processes.run_in_workers([(_echo, ([],)), (_echo, (arrays,))])
    assert here == os.getpid() != there
    for sent, got in zip(arrays, back):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert_array_equal(got, sent)
    _, (_, [doubled]) = processes.run_in_workers([(_echo, ([],)), (_doubled, ([big.T],))])
    assert_array_equal(doubled, big.T * 2)


def test_results_are_the_callers_own_arrays() -> None:
    """A later call writes the arena again; results already returned keep their values."""
    first = processes.run_in_workers([(_pid, ()), (_ones, (100_000,))])[1]
    processes.run_in_workers([(_pid, ()), (_doubled, ([np.full(100_000, 7.0, np.float32)],))])
    assert_array_equal(first, np.ones(100_000, np.float32))


def test_an_exception_in_a_worker_is_raised_in_the_caller_after_every_call_finished(tmp_path) -> None:
    mark = tmp_path / "mark"
    with pytest.raises(ValueError, match="^Conv2D: bad input$"):
        processes.run_in_workers([(_sleep_then_mark, (0.2, str(mark), 1)), (_fail, ("Conv2D: bad input",))])
    assert mark.read_text() == "done"
    with pytest.raises(RuntimeError, match="_Unpicklable: deep inside"):
        processes.run_in_workers([(_pid, ()), (_fail_unpicklably, ())])
    assert processes.run_in_workers([(_pid, ()), (_pid, ())])[1] != os.getpid()  # the worker lives on


def test_a_call_that_cannot_be_pickled_runs_in_the_caller_with_a_warning_once() -> None:
    processes._warned = False
    with pytest.warns(RuntimeWarning, match="cannot go to a worker process .*it runs in the calling process"):
        assert processes.run_in_workers([(_pid, ()), (_call, (lambda: os.getpid(),))]) == [os.getpid()] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a second time
        assert processes.run_in_workers([(_pid, ()), (_call, (lambda: os.getpid(),))]) == [os.getpid()] * 2


def test_a_worker_that_dies_has_its_call_run_in_the_caller_and_is_replaced() -> None:
    assert processes.run_in_workers([(_pid, ()), (_exit_unless_in, (os.getpid(),))])[1] == "ran in the caller"
    worker = processes.run_in_workers([(_pid, ()), (_pid, ())])[1]
    assert worker != os.getpid()
    os.kill(worker, signal.SIGKILL)  # killed between calls
    processes._workers[0].process.join(timeout=60)
    replacement = processes.run_in_workers([(_pid, ()), (_pid, ())])[1]
    assert replacement not in (worker, os.getpid())


def test_an_interrupted_caller_stops_the_busy_worker_and_no_stale_result_is_read(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        processes.run_in_workers([(_interrupt, ()), (_sleep_then_mark, (0.3, str(tmp_path / "late"), 1))])
    assert processes.run_in_workers([(_pid, ()), (_sleep_then_mark, (0, str(tmp_path / "next"), 2))])[1] == 2


def test_calls_and_results_larger_than_the_arena_still_arrive() -> None:
    """A call too large for the arena gets a worker with a larger one; a result too large
    comes inside the pickle, and the worker is replaced by one it fits."""
    half = len(processes._ready_workers(1)[0].calls_half)
    big = np.arange(half // 4 + 1000, dtype=np.float32)  # more bytes than half the arena
    _, (_, [doubled]) = processes.run_in_workers([(_pid, ()), (_doubled, ([big],))])
    assert_array_equal(doubled, big * 2)
    assert len(processes._workers[0].results_half) >= 2 * big.nbytes
    larger = len(processes._workers[0].results_half) // 4 + 1000
    assert_array_equal(processes.run_in_workers([(_pid, ()), (_ones, (larger,))])[1], np.ones(larger, np.float32))
    assert len(processes._workers[0].results_half) >= 2 * 4 * larger


def test_a_forked_child_and_a_pool_worker_get_their_calls_done() -> None:
    """A child forked after the caller used its workers forks its own; a multiprocessing
    pool's worker, which may have no children, is told to use threads."""
    import multiprocessing
    processes.run_in_workers([(_pid, ()), (_pid, ())])
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        assert pool.apply_async(processes.available).get(timeout=60) is False
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 if its own worker answered
        try:
            results = processes.run_in_workers([(_pid, ()), (_pid, ())])
            os._exit(0 if results[0] == os.getpid() != results[1] else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_call_naming_a_class_made_after_the_fork_runs_in_the_caller_then_in_a_new_worker() -> None:
    """As a layer class defined in a notebook cell after the first training: the worker
    cannot load the call, so the caller runs it; the next worker, forked now, can."""
    worker = processes.run_in_workers([(_pid, ()), (_pid, ())])[1]
    late = type("_Late", (), {"__module__": __name__, "value": 7})
    globals()["_Late"] = late  # picklable by name here; the worker's copy of this module lacks it
    try:
        assert processes.run_in_workers([(_pid, ()), (_value_and_pid, (late(),))]) == [os.getpid(), (7, os.getpid())]
        value, pid = processes.run_in_workers([(_pid, ()), (_value_and_pid, (late(),))])[1]
        assert value == 7 and pid not in (worker, os.getpid())
    finally:
        del globals()["_Late"]


def _value_and_pid(obj) -> tuple[int, int]:
    return obj.value, os.getpid()


def _malloc_tuned() -> tuple[int, bool]:
    return os.getpid(), processes._malloc_tuned


@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "mallopt"), reason="glibc's malloc only")
def test_the_worker_keeps_freed_memory_and_the_caller_is_left_alone() -> None:
    (here, tuned_here), (there, tuned_there) = processes.run_in_workers([(_malloc_tuned, ()), (_malloc_tuned, ())])
    assert here != there and tuned_there and not tuned_here


def _affinity() -> tuple[int, set[int]]:
    return os.getpid(), os.sched_getaffinity(0)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_the_caller_and_the_worker_run_on_cores_of_their_own_and_the_caller_gets_its_cores_back() -> None:
    before = os.sched_getaffinity(0)
    (_, mine), (_, worker) = processes.run_in_workers([(_affinity, ()), (_affinity, ())])
    cores = sorted(before)
    assert mine == {cores[0]} and worker == {cores[1]}
    assert os.sched_getaffinity(0) == before


def test_where_cores_cannot_be_chosen_the_calls_still_run(monkeypatch) -> None:
    def refuse(pid, cores):
        raise PermissionError("not in this sandbox")
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    before = os.sched_getaffinity(0)
    results = processes.run_in_workers([(_pid, ()), (_pid, ())])
    assert results[0] == os.getpid() != results[1]
    assert os.sched_getaffinity(0) == before


def test_code_changed_in_the_caller_reaches_a_new_worker(monkeypatch) -> None:
    """A layer method patched after the worker was forked (as a notebook cell redefines
    one): every batch of predict, the worker's share too, runs the new code."""
    import dualconv as dc
    from dualconv.models import lenet
    model = lenet(seed=0)
    x = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    model.predict(x, batch_size=64)  # the worker exists, with the code as it is
    monkeypatch.setattr(processes, "CODE_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(dc.ReLU, "_forward", lambda self, x: self._set_cache_and_zero(x))
    monkeypatch.setattr(dc.ReLU, "_set_cache_and_zero", lambda self, x: setattr(self, "_cache", (x,)) or x * 0,
                        raising=False)
    out = model.predict(x, batch_size=64)
    assert_array_equal(out, np.broadcast_to(out[0], out.shape))  # every ReLU zero: the last bias alone


def test_values_that_are_not_code_do_not_make_a_new_worker(monkeypatch) -> None:
    """A script's loop variables in __main__, a module's counters: the same worker."""
    import sys
    monkeypatch.setattr(processes, "CODE_CHECK_SECONDS", 0.0)
    first = processes.run_in_workers([(_pid, ()), (_pid, ())])[1]
    main = sys.modules["__main__"]
    for step in range(3):
        monkeypatch.setattr(main, "_dualconv_test_step", object(), raising=False)
        assert processes.run_in_workers([(_pid, ()), (_pid, ())])[1] == first
