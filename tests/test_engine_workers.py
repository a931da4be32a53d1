"""The engine's worker processes (dualconv/engine/workers.py): calls and their arrays
travel to a forked worker and back intact, errors and dead workers reach the caller as
documented, and a worker runs the caller's current code."""
from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dualconv.engine import fingerprints, pinning, workers
from dualconv.engine.passes import split

pytestmark = pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")


def _in_worker(function, *args, slot: int = 0):
    """(ok, value) of function(*args) run in the first worker, or workers.DIED; None when
    the call could not be sent."""
    worker = workers.ready_workers(1, check_code=False)[0]
    if not worker.start((function, args), slot):
        return None
    return worker.finish()


def _pid() -> int:
    return os.getpid()


def _doubled(arrays: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    return os.getpid(), [a * 2 for a in arrays]


def _echo(arrays: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    return os.getpid(), arrays


def _fail(message: str) -> None:
    raise ValueError(message)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not this one")


def _fail_unpicklably() -> None:
    raise _Unpicklable("deep inside")


def _exit() -> None:
    os._exit(3)  # a worker dying in the middle of a call


def _ones(n: int) -> np.ndarray:
    return np.ones(n, np.float32)


def test_calls_run_in_another_process_and_arrays_come_back_intact() -> None:
    """Large arrays through the shared mapping, small ones inside the pickle, views and
    structured and object arrays: each comes back equal, with its dtype and shape."""
    rng = np.random.default_rng(0)
    big = rng.random((300, 1000), dtype=np.float32)
    records = np.zeros(400, dtype=[("a", np.int32), ("b", np.float64)])
    records["a"], records["b"] = np.arange(400), np.arange(400) / 3
    arrays = [big, big[::2, ::3], big.T, rng.integers(0, 9, 7), np.full((), 2.5),
              rng.random(5000) < 0.5, np.arange(6000, dtype=np.uint8).reshape(60, 100),
              records, np.array([None, "x"], dtype=object)]
    for slot in (0, 1):
        ok, (there, back) = _in_worker(_echo, arrays, slot=slot)
        assert ok and there != os.getpid()
        for sent, got in zip(arrays, back):
            assert got.dtype == sent.dtype and got.shape == sent.shape
            assert_array_equal(got, sent)
    ok, (_, [doubled]) = _in_worker(_doubled, [big.T])
    assert_array_equal(doubled, big.T * 2)


def test_results_are_views_of_the_results_region_until_the_next_call() -> None:
    """finish() hands back the worker's arrays without copying them: views into the
    results region, which the worker's next call writes again (the engine joins or sums
    them first)."""
    worker = workers.ready_workers(1, check_code=False)[0]
    first = _in_worker(_ones, 100_000)[1]
    assert np.shares_memory(first, worker.results_half)
    assert_array_equal(first, np.ones(100_000, np.float32))
    kept = first.copy()
    _in_worker(_doubled, [np.full(100_000, 7.0, np.float32)])
    assert_array_equal(kept, np.ones(100_000, np.float32))


def test_an_exception_in_a_worker_comes_back_and_the_worker_lives_on() -> None:
    ok, error = _in_worker(_fail, "Conv2D: bad input")
    assert not ok and isinstance(error, ValueError) and str(error) == "Conv2D: bad input"
    ok, error = _in_worker(_fail_unpicklably)
    assert not ok and isinstance(error, RuntimeError) and "_Unpicklable: deep inside" in str(error)
    assert _in_worker(_pid)[1] != os.getpid()


def test_a_call_that_cannot_be_pickled_is_refused_with_a_warning_once() -> None:
    workers._warned = False
    with pytest.warns(RuntimeWarning, match="cannot go to a worker process .*it runs in the calling process"):
        assert _in_worker(_echo, lambda: 1) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a second time
        assert _in_worker(_echo, lambda: 1) is None


def test_a_worker_that_dies_answers_died_and_is_replaced() -> None:
    assert _in_worker(_exit) is workers.DIED
    worker = _in_worker(_pid)[1]
    assert worker != os.getpid()
    os.kill(worker, signal.SIGKILL)  # killed between calls
    workers.workers[0].process.join(timeout=60)
    assert _in_worker(_pid)[1] not in (worker, os.getpid())


def test_calls_and_results_larger_than_the_mapping_still_arrive() -> None:
    """A call too large for its slot gets a worker with a larger mapping; a result too
    large comes inside the pickle, and the worker is replaced by one it fits."""
    slot = len(workers.ready_workers(1, check_code=False)[0].call_slots[0])
    big = np.arange(slot // 4 + 1000, dtype=np.float32)  # more bytes than a slot
    ok, (_, [doubled]) = _in_worker(_doubled, [big])
    assert ok
    assert_array_equal(doubled, big * 2)
    assert len(workers.workers[0].call_slots[0]) >= 2 * big.nbytes
    larger = len(workers.workers[0].results_half) // 4 + 1000
    assert_array_equal(_in_worker(_ones, larger)[1], np.ones(larger, np.float32))
    assert len(workers.workers[0].results_half) >= 2 * 4 * larger


def test_a_forked_child_and_a_pool_worker_get_their_own() -> None:
    """A child forked after the caller used its workers forks its own; a multiprocessing
    pool's worker, which may have no children, is told to use threads."""
    import multiprocessing
    _in_worker(_pid)
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        assert pool.apply_async(workers.available).get(timeout=60) is False
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 if its own worker answered
        try:
            answer = _in_worker(_pid)
            os._exit(0 if answer[0] and answer[1] != os.getpid() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _value_and_pid(obj) -> tuple[int, int]:
    return obj.value, os.getpid()


def test_a_call_naming_a_class_made_after_the_fork_answers_died_then_a_new_worker_runs_it() -> None:
    """As a layer class defined in a notebook cell after the first training: the worker
    cannot load the call; the next worker, forked now, can."""
    worker = _in_worker(_pid)[1]
    late = type("_Late", (), {"__module__": __name__, "value": 7})
    globals()["_Late"] = late  # picklable by name here; the worker's copy of this module lacks it
    try:
        assert _in_worker(_value_and_pid, late()) is workers.DIED
        ok, (value, pid) = _in_worker(_value_and_pid, late())
        assert ok and value == 7 and pid not in (worker, os.getpid())
    finally:
        del globals()["_Late"]


def _malloc_kept() -> bool:
    return workers.keep_freed_memory()


@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "mallopt"), reason="glibc's malloc only")
def test_the_worker_keeps_freed_memory() -> None:
    assert _in_worker(_malloc_kept)[1] is True


def _affinity() -> set[int]:
    return os.sched_getaffinity(0)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_the_caller_and_the_worker_run_on_cores_of_their_own_and_the_caller_gets_its_cores_back() -> None:
    before = os.sched_getaffinity(0)
    cores = sorted(before)
    with pinning.on_first_core(True):
        assert os.sched_getaffinity(0) == {cores[0]}
    assert os.sched_getaffinity(0) == before
    assert _in_worker(_affinity)[1] == {cores[1]}


def test_where_cores_cannot_be_chosen_the_calls_still_run(monkeypatch) -> None:
    def refuse(pid, cores):
        raise PermissionError("not in this sandbox")
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    before = os.sched_getaffinity(0)
    with pinning.on_first_core(True):
        assert _in_worker(_pid)[1] != os.getpid()
    assert os.sched_getaffinity(0) == before


def test_code_changed_in_the_caller_reaches_a_new_worker(monkeypatch) -> None:
    """A layer method patched after the worker was forked (as a notebook cell redefines
    one): every part of predict, the worker's too, runs the new code."""
    import dualconv as dc
    from dualconv.models import lenet
    model = lenet(seed=0)
    x = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    model.predict(x)  # the worker exists, with the code as it is
    monkeypatch.setattr(fingerprints, "CODE_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(dc.ReLU, "_forward", lambda self, x: self._set_cache_and_zero(x))
    monkeypatch.setattr(dc.ReLU, "_set_cache_and_zero", lambda self, x: setattr(self, "_cache", (x,)) or x * 0,
                        raising=False)
    out = model.predict(x)
    assert_array_equal(out, np.broadcast_to(out[0], out.shape))  # every ReLU zero: the last bias alone


def test_values_that_are_not_code_do_not_make_a_new_worker(monkeypatch) -> None:
    """A script's loop variables in __main__, a module's counters: the same worker."""
    import sys
    first = workers.ready_workers(1, check_code=True)[0].process.pid  # running the code as it is now
    main = sys.modules["__main__"]
    for _ in range(3):
        monkeypatch.setattr(main, "_dualconv_test_step", object(), raising=False)
        assert workers.ready_workers(1, check_code=True)[0].process.pid == first


def _sleep(seconds: float) -> int:
    import time
    time.sleep(seconds)
    return os.getpid()


def test_an_exception_in_a_worker_carries_the_workers_traceback() -> None:
    ok, error = _in_worker(_fail, "bad")
    assert not ok and any("in dualconv's worker process" in note and "_fail" in note for note in error.__notes__)
    ok, error = _in_worker(_fail_unpicklably)
    assert not ok and any("_fail_unpicklably" in note for note in error.__notes__)


def test_a_stopped_worker_is_given_up_and_release_workers_ends_them() -> None:
    """SIGSTOP in the middle of a call: the waiting caller notices within
    STALL_CHECK_SECONDS and answers DIED (the engine then computes the share itself)."""
    import threading
    worker = workers.ready_workers(1, check_code=False)[0]
    assert worker.start((_sleep, (0.5,)))
    os.kill(worker.process.pid, signal.SIGSTOP)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(worker.finish()), daemon=True)
    waiting.start()
    waiting.join(timeout=120)
    assert not waiting.is_alive(), "the caller waits for a stopped worker forever"
    assert answers == [workers.DIED] and not worker.alive()
    process = workers.ready_workers(1, check_code=False)[0].process
    workers.release_workers()
    assert workers.workers == [] and not process.is_alive()


def test_where_no_worker_can_start_the_caller_computes_every_part(monkeypatch) -> None:
    """A process limit (fork raising BlockingIOError): a warning, once, and the weights of
    a run on one core."""
    import dualconv as dc
    from dualconv.models import lenet
    rng = np.random.default_rng(2)
    X, y = rng.random((128, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 128)

    def weights() -> dict:
        model = lenet(seed=1)
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.1), progress=False)
        trainer.fit(X, y, epochs=1, batch_size=64, seed=0)
        return model.state_dict()

    dc.set_num_threads(1)
    try:
        expected = weights()
    finally:
        dc.set_num_threads(None)
    workers.release_workers()

    def refuse(self, *args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(workers.Worker, "__init__", refuse)
    monkeypatch.setattr(workers, "_warned", False)
    with pytest.warns(RuntimeWarning, match="cannot start a worker process .*BlockingIOError"):
        got = weights()
    for name, w in expected.items():
        assert_array_equal(got[name], w, err_msg=name)


def test_a_worker_whose_caller_is_gone_ends_without_a_traceback() -> None:
    """The caller exits while its worker computes: the worker's answer finds no reader,
    and it ends quietly."""
    import subprocess
    import sys
    script = (
        "import os, sys\n"
        "sys.path.insert(0, %r)\n"
        "from dualconv.engine import workers\n"
        "import test_engine_workers as t\n"
        "w = workers.ready_workers(1, check_code=False)[0]\n"
        "assert w.start((t._sleep, (0.5,)))\n"
        "os._exit(0)\n" % os.path.dirname(__file__))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


def test_a_class_level_value_changing_is_not_a_code_change(monkeypatch) -> None:
    """A counter kept on a layer class (a value, not code) leaves the fingerprint as it
    is, so the worker is not forked again; a patched method changes it."""
    import dualconv as dc
    before = fingerprints.code_fingerprint()
    monkeypatch.setattr(dc.ReLU, "calls", 1, raising=False)
    monkeypatch.setattr(dc.ReLU, "calls", 2, raising=False)
    assert fingerprints.code_fingerprint() == before
    monkeypatch.setattr(dc.ReLU, "_forward", lambda self, x: x)
    assert fingerprints.code_fingerprint() != before


LAYER_SOURCE = '''
import dualconv as dc


class Scale(dc.Layer):
    couples_samples = False

    def _forward(self, x):
        self._cache = x.shape
        return x * {factor}

    def _backward(self, gy):
        return gy * {factor}
'''


def test_a_reloaded_layer_module_reaches_the_worker(tmp_path, monkeypatch) -> None:
    """importlib.reload of a user's layer module (not dualconv's, not __main__): a model
    built from the reloaded class computes every part with the new code."""
    import importlib
    import sys
    import dualconv as dc
    module_file = tmp_path / "user_layers_for_reload.py"
    module_file.write_text(LAYER_SOURCE.format(factor=1))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("user_layers_for_reload")
    workers.release_workers()  # the next worker is forked with the module as first imported
    x = np.random.default_rng(0).random((512, 1, 64, 64), dtype=np.float32)  # two parts a batch
    try:
        dc.set_num_threads(2)
        assert len(split([dc.Flatten().eval(), module.Scale().eval()], x[:256])) == 2
        first = dc.Sequential([dc.Flatten(), module.Scale()], seed=0).predict(x)
        assert_array_equal(first, x.reshape(512, -1))
        module_file.write_text(LAYER_SOURCE.format(factor=2))
        importlib.invalidate_caches()
        module = importlib.reload(module)
        second = dc.Sequential([dc.Flatten(), module.Scale()], seed=0).predict(x)
        assert_array_equal(second, 2 * x.reshape(512, -1))
    finally:
        dc.set_num_threads(None)
        sys.modules.pop("user_layers_for_reload", None)


def test_a_worker_grown_for_a_large_call_shrinks_back_after_small_ones() -> None:
    """The mapping grows for a call larger than its slot, and goes back to ARENA_BYTES after
    SHRINK_AFTER_CALLS small forward calls in a row; a small backward call (slot 1) does not
    count, so the forward's kept arrays stay where they are."""
    workers.release_workers()
    slot = len(workers.ready_workers(1, check_code=False)[0].call_slots[0])
    big = np.ones(slot // 4 + 1000, np.float32)
    assert _in_worker(_doubled, [big])[0]
    worker = workers.workers[0]
    assert worker.arena_bytes > workers.ARENA_BYTES
    for _ in range(workers.SHRINK_AFTER_CALLS - 1):
        assert _in_worker(_pid)[0] and _in_worker(_pid, slot=1)[0]
    assert workers.workers[0].arena_bytes > workers.ARENA_BYTES
    assert _in_worker(_pid)[0]
    assert workers.workers[0].arena_bytes == workers.ARENA_BYTES


def _kernel_setting() -> str | None:
    return os.environ.get("DUALCONV_NATIVE")


def test_a_kernel_setting_changed_in_the_environment_reaches_a_new_worker(monkeypatch) -> None:
    """DUALCONV_NATIVE set after the worker was forked (the compiled CPU kernels read it at
    each call): the next call runs in a new worker that sees the new value; unchanged, the
    same worker."""
    first = workers.ready_workers(1, check_code=False)[0].process.pid
    assert workers.ready_workers(1, check_code=False)[0].process.pid == first
    flipped = "1" if os.environ.get("DUALCONV_NATIVE") == "0" else "0"
    monkeypatch.setenv("DUALCONV_NATIVE", flipped)
    assert workers.ready_workers(1, check_code=False)[0].process.pid != first
    assert _in_worker(_kernel_setting) == (True, flipped)
