"""How many cores the engine uses, what its workers are, and the BLAS meanwhile.

``num_threads()`` is the cores a batch's parts are spread over: min(DEFAULT_THREADS,
the cores this process may use, what the parallelism around it left it: 1 in a
multiprocessing.Pool worker, OMP_NUM_THREADS where set), or DUALCONV_NUM_THREADS, or
``set_num_threads(n)``; 1 turns the engine off. ``worker_kind()`` is "processes" on Linux (workers.py), else
"threads", or what DUALCONV_WORKERS says. ``run_on_threads`` runs tasks on a thread
pool (concurrent.futures). While shares run, ``blas_on_one_thread`` holds every BLAS
NumPy loaded at one thread (threadpoolctl): BLAS threads on top of the engine's would
ask for more cores than there are. The user's BLAS setting is restored afterwards.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from . import neighbours, workers

T = TypeVar("T")

DEFAULT_THREADS = 2
"""Cores used by default, where the process may use that many: the machines this library
is tuned on have two (benchmarks/lenet_vs_torch.py --threads compares other counts)."""

_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_blas_lock = threading.Lock()
_blas_users = 0
_blas_found: list[tuple[Any, Any]] = []  # (library, its thread count when the first caller came in)
_blas_controller: Any = None  # threadpoolctl's controller of each loaded BLAS, listed once
this_thread = threading.local()  # in_task: this thread runs one of the engine's shares


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def num_threads() -> int:
    """The cores a batch's parts are spread over: the calling thread and num_threads() - 1
    workers (1: the calling thread alone, the engine off; always 1 inside a worker)."""
    if workers.in_worker:
        return 1
    if _threads is not None:
        return _threads
    setting = os.environ.get("DUALCONV_NUM_THREADS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"DUALCONV_NUM_THREADS must be a positive integer, got {setting!r}")
        return int(setting)
    return max(1, min(DEFAULT_THREADS, _cores(), _given()))


def cores_now() -> int:
    """The cores a call may spread its parts over now: num_threads(), shared with the other
    dualconv processes computing on this machine (neighbours.py)."""
    return neighbours.share(num_threads(), _cores())


def _given() -> int:
    """The cores the parallelism around this process left it: 1 in a daemonic process (a
    multiprocessing.Pool's worker, where siblings share the cores), OMP_NUM_THREADS where
    set (joblib and loky set it in their workers), else no limit."""
    import multiprocessing
    if multiprocessing.current_process().daemon:
        return 1
    setting = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(setting) if setting.isdigit() and int(setting) >= 1 else DEFAULT_THREADS


def set_num_threads(n: int | None) -> None:
    """Use ``n`` cores (1: the calling thread only; None: back to the default)."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: expected a positive int or None, got {n!r}")
    _threads = n


def worker_kind() -> str:
    """"processes" or "threads": what the engine's workers are (see the module docstring)."""
    setting = os.environ.get("DUALCONV_WORKERS", "").strip()
    if setting not in ("", "processes", "threads"):
        raise ValueError(f"DUALCONV_WORKERS must be 'processes' or 'threads', got {setting!r}")
    if setting == "threads" or not workers.available():
        return "threads"
    return "processes"


def run_on_threads(tasks: list[Callable[[], T]]) -> list[T]:
    """Run the tasks at once, the first on the calling thread and the others on the
    engine's worker threads; their results in order. An exception in any task is
    raised here, after every task has finished."""
    if len(tasks) == 1 or getattr(this_thread, "in_task", False):
        return [task() for task in tasks]
    futures = [_thread_pool(len(tasks) - 1).submit(_as_task, task) for task in tasks[1:]]
    try:
        first = _as_task(tasks[0])
    finally:
        for future in futures:
            future.exception()  # wait for every worker before anything is raised
    return [first] + [future.result() for future in futures]


def _as_task(task: Callable[[], T]) -> T:
    this_thread.in_task = True
    try:
        return task()
    finally:
        this_thread.in_task = False


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
    """A forked child has none of its parent's threads: it starts its own pool when needed."""
    global _pool, _pool_size, _pool_lock, _blas_lock, _blas_users, _blas_found
    _pool, _pool_size, _pool_lock, _blas_lock = None, 0, threading.Lock(), threading.Lock()
    _blas_users, _blas_found = 0, []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


class blas_on_one_thread:
    """Holds every loaded BLAS at one thread while any caller is inside; the last one out
    restores the thread counts the first one in found. It runs twice a training step, so
    it calls each library's own get/set functions (threadpoolctl's controllers, found
    once), not threadpoolctl's limiter, which lists every library's settings each time."""

    def __enter__(self) -> None:
        global _blas_users, _blas_found
        with _blas_lock:
            if _blas_users == 0:
                _blas_found = [(library, library.get_num_threads()) for library in _blas_libraries()]
                for library, threads in _blas_found:
                    if threads != 1:
                        library.set_num_threads(1)
            _blas_users += 1

    def __exit__(self, *exc: Any) -> None:
        global _blas_users, _blas_found
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for library, threads in _blas_found:
                    library.set_num_threads(threads)  # even 1: a block may have changed it
                _blas_found = []


def _blas_libraries() -> list[Any]:
    """threadpoolctl's controller of each BLAS loaded when first asked (as NumPy loads it)."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController
        _blas_controller = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_controller


def describe() -> str:
    """The engine's cores and kind of worker, and each BLAS NumPy loaded with its kernel
    and threads (a line of ``dualconv info``)."""
    from threadpoolctl import threadpool_info

    blas = [f"{lib['internal_api']} {lib['version']} ({lib.get('architecture') or 'kernel not reported'}, "
            f"{lib['num_threads']} threads)" for lib in threadpool_info() if lib["user_api"] == "blas"]
    return (f"CPU threads: {num_threads()} (DUALCONV_NUM_THREADS or dualconv.set_num_threads), "
            f"workers: {worker_kind()} (DUALCONV_WORKERS); BLAS: {', '.join(blas) or 'none found'}")
