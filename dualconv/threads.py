"""dualconv's own worker threads, for batches computed in parts on the CPU (parts.py).

NumPy releases the GIL inside its loops and BLAS calls, so two Python threads
each running a part of a batch through the layers use two cores. The work
must be coarse (a part of 64 images: each NumPy call long enough that handing
the GIL over costs little); finer-grained threading loses to the GIL.

While dualconv's threads run, the BLAS is held at one thread. Both are pools
of the same cores: OpenBLAS threading each call on top of two threads that
each call it runs 2-3x slower than either alone (measured on the 2-core
machines of this project). The BLAS setting is the user's: dualconv changes it
only for the duration of a batch run in parts, through threadpoolctl, and
restores it afterwards; ``set_num_threads(1)`` turns all of this off, and then
dualconv never touches the BLAS. The default is min(2, the cores this process
may use), or the environment variable DUALCONV_NUM_THREADS.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

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
_this_thread = threading.local()  # in_task: this thread runs one of run_on_threads' tasks


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def num_threads() -> int:
    """The threads dualconv uses for a batch run in parts (1: the calling thread only)."""
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


def run_on_threads(tasks: list[Callable[[], T]]) -> list[T]:
    """Run the tasks at once, the first on the calling thread and the others on
    dualconv's workers, and return their results in order. The BLAS is held at
    one thread meanwhile. An exception in any task is raised here, after every
    task has finished."""
    if len(tasks) == 1 or getattr(_this_thread, "in_task", False):
        # one task, or a task that asks for threads itself (the workers are busy with
        # its siblings): the tasks run one after another, here
        return [task() for task in tasks]
    with _blas_on_one_thread():
        futures = [_workers(len(tasks) - 1).submit(_as_task, task) for task in tasks[1:]]
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


def _workers(count: int) -> ThreadPoolExecutor:
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
