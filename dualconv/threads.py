"""How many cores dualconv uses on the CPU, and its workers: processes or threads.

A batch computed in parts (parts.py) or a prediction shared out in batches runs
its first share on the calling thread and each other share on a worker:
``run_in_parallel``. On Linux a worker is a process (processes.py): two Python
threads share one GIL, which every NumPy call takes back when it ends, so threads
that make many short calls mostly wait on each other (LeNet's step at batch 64 in
two parts: 5.9 ms on two threads, 4.2 whole on one, 3.1 with a worker process).
Elsewhere, or with DUALCONV_WORKERS=threads, the workers are threads: NumPy releases
the GIL inside its loops and BLAS calls, which is enough for coarse work.

While the workers run, the calling process holds its BLAS at one thread. Both are
pools of the same cores: OpenBLAS threading each call on top of two threads that
each call it runs 2-3x slower than either alone (measured on the 2-core machines
of this project). The BLAS setting is the user's: dualconv changes it only while
a batch's shares run, through threadpoolctl, and restores it afterwards;
``set_num_threads(1)`` turns all of this off, and then dualconv never touches the
BLAS. The default is min(2, the cores this process may use), or the environment
variable DUALCONV_NUM_THREADS.
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from . import processes
from .processes import Call

T = TypeVar("T")

DEFAULT_THREADS = 2
"""Threads by default (on a machine with at least that many cores): measured fastest on
the 2-core machines this library is tuned on."""

_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None
_blas_controller: Any = None  # threadpoolctl's view of the loaded libraries, made once
_this_thread = threading.local()  # in_task: this thread runs one of run_in_parallel's calls


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def num_threads() -> int:
    """The cores dualconv uses for a batch run in parts: the calling thread and
    num_threads() - 1 workers (1: the calling thread only)."""
    if _threads is not None:
        return _threads
    setting = os.environ.get("DUALCONV_NUM_THREADS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"DUALCONV_NUM_THREADS must be a positive integer, got {setting!r}")
        return int(setting)
    return max(1, min(DEFAULT_THREADS, _cores()))


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads (1: none besides the caller's; None: back to the default)."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: expected a positive int or None, got {n!r}")
    _threads = n


def run_in_parallel(calls: list[Call]) -> list[Any]:
    """Run the calls (a module-level function and its arguments each) at once: the
    first on the calling thread, the others on dualconv's workers (worker processes
    on Linux, else threads; DUALCONV_WORKERS=threads or processes chooses). Returns
    their results in order; an exception in any call is raised here, after every
    call has finished. The BLAS is held at one thread meanwhile."""
    if len(calls) == 1 or getattr(_this_thread, "in_task", False):
        # one call, or a call that asks for workers itself (they are busy with its
        # siblings): the calls run one after another, here
        return [function(*args) for function, args in calls]
    with _blas_on_one_thread():
        if worker_kind() == "processes":
            _this_thread.in_task = True  # calls[0] runs here, with the workers busy
            try:
                return processes.run_in_workers(calls)
            finally:
                _this_thread.in_task = False
        return run_on_threads([functools.partial(function, *args) for function, args in calls])


def worker_kind() -> str:
    """"processes" or "threads": what run_in_parallel's workers are (see the module docstring)."""
    setting = os.environ.get("DUALCONV_WORKERS", "").strip()
    if setting not in ("", "processes", "threads"):
        raise ValueError(f"DUALCONV_WORKERS must be 'processes' or 'threads', got {setting!r}")
    if setting == "threads" or not processes.available():
        return "threads"
    return "processes"


def run_on_threads(tasks: list[Callable[[], T]]) -> list[T]:
    """Run the tasks at once, the first on the calling thread and the others on
    dualconv's worker threads, and return their results in order. An exception in
    any task is raised here, after every task has finished."""
    if len(tasks) == 1 or getattr(_this_thread, "in_task", False):
        return [task() for task in tasks]
    futures = [_thread_pool(len(tasks) - 1).submit(_as_task, task) for task in tasks[1:]]
    try:
        first = _as_task(tasks[0])
    finally:
        for future in futures:
            future.exception()  # wait for every worker before anything is raised
    return [first] + [future.result() for future in futures]


def _as_task(task: Callable[[], T]) -> T:
    """Run ``task`` marked as one of run_on_threads' tasks on this thread."""
    _this_thread.in_task = True
    try:
        return task()
    finally:
        _this_thread.in_task = False


def _thread_pool(count: int) -> ThreadPoolExecutor:
    """The worker pool, with at least ``count`` workers (made, or remade larger, on demand)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < count:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool, _pool_size = ThreadPoolExecutor(max_workers=count, thread_name_prefix="dualconv"), count
        return _pool


def _forget_threads_after_fork() -> None:
    """A forked child has none of its parent's threads: it starts its own pool when it
    needs one (an inherited pool would queue work for workers that do not exist)."""
    global _pool, _pool_size, _pool_lock, _blas_lock, _blas_users, _blas_limiter
    _pool, _pool_size, _pool_lock, _blas_lock = None, 0, threading.Lock(), threading.Lock()
    _blas_users, _blas_limiter = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


class _blas_on_one_thread:
    """Holds every loaded BLAS at one thread while any caller is inside; the last
    one out restores the settings found by the first one in."""

    def __enter__(self) -> None:
        global _blas_users, _blas_limiter, _blas_controller
        with _blas_lock:
            if _blas_users == 0:
                if _blas_controller is None:
                    from threadpoolctl import ThreadpoolController
                    _blas_controller = ThreadpoolController()
                _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
            _blas_users += 1

    def __exit__(self, *exc: Any) -> None:
        global _blas_users, _blas_limiter
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
