"""dualconv's worker processes: the second core's share of a batch, without the GIL (Linux).

Two Python threads share one GIL, which every NumPy call takes back when it ends:
threads that each make many short calls mostly wait on each other. Measured on the
2-core Intel machine, one LeNet SGD step at batch 64 in two parts of 32: 5.9 ms on
two threads, 4.2 ms whole on one, 3.1 ms with the second part in a worker process.

How a call travels (``run_in_workers``):

- The call is a module-level function and its arguments (for a training batch: a
  replica of the model, the loss and the worker's samples). It is pickled, except
  that every NumPy array of ``INLINE_BYTES`` or more is copied into shared memory
  (the arena: an anonymous shared mapping made before the worker is forked) and the
  worker reads it there in place. The result comes back the same way, and the caller
  gets copies. So the parameters are copied at every call (LeNet: 0.25 MB, about
  30 us); nothing of the caller's model is kept in the worker between calls.
- A worker is forked from the calling process the first time one is needed, so it
  starts with NumPy and dualconv imported (a few ms), and it holds its BLAS at one
  thread (the caller's own part uses the other core). It is kept for later calls;
  a call too large for its arena replaces it with one with a larger arena.
- A worker runs the code it was forked with. When the caller's changes (a notebook
  cell redefining a layer, monkeypatching, importlib.reload of a dualconv module; see
  _code), the worker is forked again: checked every CODE_CHECK_SECONDS and at the
  first call of every Trainer.fit.
- The worker keeps the memory a call frees for the next one (glibc's malloc
  settings, in the worker alone: ``_keep_freed_memory``).
- Between calls the worker, and the caller waiting for a result, poll for up to
  ``SPIN_SECONDS`` before they block: a core woken from sleep (on these VMs, a
  halted virtual CPU) answers tens of microseconds late and runs cold. LeNet's step
  at batch 64: 17.5k -> 18.4-18.8k images/s. (OpenMP runtimes spin 200 ms.)
- An exception in the worker is raised in the caller, with the same type and
  message. A worker that dies (killed), or that cannot load a call (it names a class
  defined in the caller after the fork, in a notebook cell say), has its call run in
  the caller instead, and a new one is forked next time. The worker ignores Ctrl-C;
  an interrupted caller stops its workers, which never leaves a stale result behind.
"""
from __future__ import annotations

import copyreg
import ctypes
import io
import mmap
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import types
import warnings
from typing import Any, Callable

import numpy as np

Call = tuple[Callable[..., Any], tuple[Any, ...]]  # a module-level function and its arguments

INLINE_BYTES = 1024
"""Arrays smaller than this travel inside the pickle; larger ones through the arena."""

ARENA_BYTES = 32 * 2**20
"""A new worker's arena (half for calls, half for results). Pages never written take
no memory; a larger call gets a worker with an arena twice its size."""

SPIN_SECONDS = 0.002
"""How long the worker and a waiting caller poll their pipe before blocking on it."""

_ALIGN = 64  # each array in the arena starts on a cache line

_workers: list["_Worker"] = []
_lock = threading.Lock()  # held by the thread using the workers


def available() -> bool:
    """Whether worker processes can run here: on Linux, where a fork copies this process
    (the start method multiprocessing uses there), in a process allowed to have children
    (a multiprocessing.Pool's workers are not). Elsewhere dualconv uses threads."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def run_in_workers(calls: list[Call]) -> list[Any]:
    """Run calls[0] here and each later call in a worker process at the same time;
    returns their results in order. An exception in any call is raised here, after
    every call has finished. A call that cannot be pickled runs here, after calls[0]
    (with a RuntimeWarning the first time), and so do all of them while another thread
    of this process uses the workers."""
    if not _lock.acquire(blocking=False):
        return [function(*args) for function, args in calls]
    try:
        return _run(calls)
    finally:
        _lock.release()


def _run(calls: list[Call]) -> list[Any]:
    workers = _ready_workers(len(calls) - 1)
    with _on_first_core(all(worker.core is not None for worker in workers)):
        return _run_on(workers, calls)


def _run_on(workers: list["_Worker"], calls: list[Call]) -> list[Any]:
    sent: list[tuple[int, _Worker]] = []
    here = [0]
    try:
        for index, worker in enumerate(workers, start=1):
            if worker.start_call(calls[index]):
                sent.append((index, worker))
            else:
                here.append(index)
        outcomes = {index: _run_here(calls[index]) for index in here}
        for index, worker in sent:
            outcome = worker.finish_call()
            outcomes[index] = _run_here(calls[index]) if outcome is _DIED else outcome
    except BaseException:  # interrupted (Ctrl-C): a worker still busy would answer late
        for _, worker in sent:
            if worker.busy:
                worker.stop()
        raise
    for ok, value in (outcomes[index] for index in range(len(calls))):
        if not ok:
            raise value
    return [outcomes[index][1] for index in range(len(calls))]


def _run_here(call: Call) -> tuple[bool, Any]:
    function, args = call
    try:
        return True, function(*args)
    except Exception as error:
        return False, error


_DIED: Any = object()  # finish_call's answer when the worker died, or could not load the call
_UNKNOWN_HERE = "dualconv worker: the call names what this worker does not have"


def _ready_workers(count: int) -> list["_Worker"]:
    """``count`` live workers running the caller's code (dead or stale ones replaced)."""
    code = _code_if_due()
    for i, worker in enumerate(_workers):
        if not worker.alive() or (code is not None and code != worker.code):
            worker.stop()
            _workers[i] = _Worker(ARENA_BYTES, _core(i + 1))
    while len(_workers) < count:
        _workers.append(_Worker(ARENA_BYTES, _core(len(_workers) + 1)))
    return _workers[:count]


def _core(index: int) -> int | None:
    """The index-th core this thread may use (0: the caller's), None if there are not that many."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[index] if index < len(cores) else None


class _on_first_core:
    """Holds the calling thread on the first core it may use (the workers have the
    others) meanwhile, then gives it back the cores it had; with ``pin`` False, or where
    a sandbox refuses, leaves it alone."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin

    def __enter__(self) -> None:
        self.mask = os.sched_getaffinity(0) if self.pin else None
        if self.mask is not None and not _pin({min(self.mask)}):
            self.mask = None

    def __exit__(self, *exc: Any) -> None:
        if self.mask is not None:
            _pin(self.mask)


def _pin(cores: set[int]) -> bool:
    """Put the calling thread on ``cores``; False where that is not allowed (a sandbox)."""
    try:
        os.sched_setaffinity(0, cores)
        return True
    except OSError:
        return False


CODE_CHECK_SECONDS = 0.5
"""How often, at most, a call compares the caller's code with what its workers were
forked with (_code: 0.13 ms on LeNet's step of 3.5 ms, so not at every call)."""

_code_checked_at = float("-inf")


def _code_if_due() -> int | None:
    """_code(), if CODE_CHECK_SECONDS have passed since it was last taken; else None."""
    global _code_checked_at
    now = time.monotonic()
    if now - _code_checked_at < CODE_CHECK_SECONDS:
        return None
    _code_checked_at = now
    return _code()


def _code() -> int:
    """A fingerprint of the code a worker runs: the classes and functions bound in
    dualconv's modules and in __main__, and what the classes defined there hold. A worker
    is forked with the caller's code and keeps it; when such a class or function is
    redefined (a notebook cell run again, importlib.reload, monkeypatching a method) the
    fingerprint changes and the worker is forked again. Other values (a script's loop
    variables, a module's settings) are not part of it, nor is a function's code replaced
    in place, nor any other module."""
    parts = []
    for name, module in list(sys.modules.items()):
        if name == "__main__" or name == "dualconv" or name.startswith("dualconv."):
            code = [value for value in list(vars(module).values()) if isinstance(value, _CODE)]
            parts.append(tuple(map(id, code)))
            parts.extend(tuple(map(id, vars(value).values())) for value in code
                         if isinstance(value, type) and value.__module__ == name)
    return hash(tuple(parts))


_CODE = (type, types.FunctionType)


def check_code_at_next_call() -> None:
    """Make the next call compare the caller's code with its workers' whatever the time
    (Trainer.fit calls this first: training after code was changed never runs half a
    batch on the old code)."""
    global _code_checked_at
    _code_checked_at = float("-inf")


class _Worker:
    """One worker process, its pipe and its arena (parent side)."""

    def __init__(self, arena_bytes: int, core: int | None) -> None:
        self.arena_bytes, self.core = arena_bytes, core
        self.code = _code()
        self.arena = mmap.mmap(-1, arena_bytes)  # MAP_SHARED: the child sees the same pages
        self.calls_half, self.results_half = _halves(self.arena)
        self.conn, child_conn = multiprocessing.Pipe()
        context = multiprocessing.get_context("fork")
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a process that has threads (a BLAS pool,
            # tqdm's monitor): the child runs only _serve, which takes no lock those
            # threads may hold (glibc and OpenBLAS reset theirs at a fork).
            warnings.simplefilter("ignore", DeprecationWarning)
            self.process = context.Process(target=_serve, args=(child_conn, self.conn, self.arena, core),
                                           name="dualconv-worker", daemon=True)
            self.process.start()
        child_conn.close()
        self.busy = False

    def alive(self) -> bool:
        return self.process.pid is not None and self.process.is_alive()

    def start_call(self, call: Call) -> bool:
        """Send ``call``; False (nothing sent) when it cannot be pickled."""
        try:
            message = _pack(call, self.calls_half)
        except _TooLarge as large:
            self._grow(2 * large.needed)
            return self.start_call(call)
        except Exception as error:  # cannot be pickled (a lambda, a lock, a __reduce__ that refuses)
            _warn_once(f"dualconv: a call cannot go to a worker process ({type(error).__name__}: {error}); "
                       f"it runs in the calling process, on one core. A model whose layers pickle "
                       f"(no lambdas or open files as attributes) uses both.")
            return False
        try:
            self.conn.send_bytes(message)
        except OSError:  # the worker died: the call runs in the caller
            self.stop()
            return False
        self.busy = True
        return True

    def finish_call(self) -> tuple[bool, Any]:
        """(True, result) or (False, the exception raised); _DIED if the worker died."""
        try:
            _spin_until_readable(self.conn)
            message = self.conn.recv_bytes()
        except (EOFError, OSError):
            self.stop()
            return _DIED
        self.busy = False
        ok, value, needed = _unpack(message, self.results_half, copy=True)
        if not ok and isinstance(value, str) and value == _UNKNOWN_HERE:
            self.stop()  # forked before the call's code existed: the next fork has it
            return _DIED
        if needed > len(self.results_half):
            self._grow(2 * needed)  # this result came inline; later ones fit the arena
        return ok, value

    def _grow(self, half_bytes: int) -> None:
        """Replace this worker by one with an arena whose halves hold ``half_bytes``."""
        self.stop()
        self.__init__(max(2 * half_bytes, self.arena_bytes), self.core)  # type: ignore[misc]

    def stop(self) -> None:
        self.busy = False
        self.conn.close()
        if self.process.pid is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _serve(conn: Any, parents_end: Any, arena: mmap.mmap, core: int | None) -> None:
    """The worker's loop: run each call received, send back its result or exception."""
    parents_end.close()  # so that the caller's end closing (it exited) ends recv_bytes
    if core is not None:
        _pin({core})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller handles Ctrl-C and stops us
    _keep_freed_memory()
    from threadpoolctl import threadpool_limits
    from .threads import set_num_threads
    threadpool_limits(limits=1, user_api="blas")  # the caller's own part uses the other core
    set_num_threads(1)  # a call never forks or threads again
    calls_half, results_half = _halves(arena)
    while True:
        try:
            _spin_until_readable(conn)
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            function, args = _unpack(message, calls_half, copy=False)
        except Exception:  # a class or function defined in the caller after this fork
            outcome: tuple[bool, Any] = (False, _UNKNOWN_HERE)
        else:
            try:
                outcome = (True, function(*args))
            except Exception as error:
                outcome = (False, _picklable(error))
        try:
            reply = _pack((*outcome, 0), results_half)
        except _TooLarge as large:
            reply = pickle.dumps((*outcome, large.needed), protocol=pickle.HIGHEST_PROTOCOL)
        conn.send_bytes(reply)


def _keep_freed_memory() -> bool:
    """Tell glibc's malloc, in this worker, to keep the memory a call frees for the next
    call (no trimming; blocks under 32 MB from the heap, not each its own mapping): a part
    allocates the same tens of MB at every call, and returning them to the system after
    each one made every call fault them in again. LeNet at batch 256, the worker as
    forked: 16.1-17.2k images/s; with this: 22.5-23.7k (Intel, 2 cores). Only the worker:
    the caller's process and its settings are the user's. False where malloc is not glibc's."""
    global _malloc_tuned
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    _malloc_tuned = bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30))
    return _malloc_tuned


_malloc_tuned = False  # in a worker: whether _keep_freed_memory took


_warned = False  # _warn_once has warned in this process


def _warn_once(message: str) -> None:
    """A RuntimeWarning, the first time only (a training loop would repeat it every step)."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def _spin_until_readable(conn: Any) -> None:
    """Poll ``conn`` until it has something to read or SPIN_SECONDS have passed."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while not conn.poll(0) and time.perf_counter() < deadline:
        pass


def _picklable(error: Exception) -> Exception:
    """``error``, or a RuntimeError with its type and message when it cannot be pickled."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _halves(arena: mmap.mmap) -> tuple[np.ndarray, np.ndarray]:
    """The arena as two byte arrays: calls (caller writes) and results (worker writes)."""
    whole = np.frombuffer(arena, np.uint8)
    half = len(whole) // 2
    return whole[:half], whole[half:]


class _TooLarge(Exception):
    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


def _pack(obj: Any, region: np.ndarray) -> bytes:
    """``obj`` pickled, its arrays of INLINE_BYTES or more copied into ``region`` and
    named by (offset, shape, dtype). Raises _TooLarge when they do not fit."""
    buffer = io.BytesIO()
    packer = _Packer(buffer, region)
    packer.dump(obj)
    if packer.used > len(region):
        raise _TooLarge(packer.used)
    return buffer.getvalue()


class _Packer(pickle.Pickler):
    """A pickler that puts large arrays in the arena. (Through a dispatch table, looked
    up in C for each object's type: a persistent_id method would be a Python call per
    object pickled, which made a LeNet call take 0.1 ms to pickle.)"""

    def __init__(self, file: io.BytesIO, region: np.ndarray) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.region, self.used = region, 0
        self.dispatch_table = {**copyreg.dispatch_table, np.ndarray: self._reduce_array}

    def _reduce_array(self, array: np.ndarray) -> Any:
        if array.nbytes < INLINE_BYTES or array.dtype.hasobject:
            return array.__reduce__()
        start = -(-self.used // _ALIGN) * _ALIGN
        self.used = start + array.nbytes
        if self.used <= len(self.region):
            np.copyto(np.ndarray(array.shape, array.dtype, self.region, start), array)
        return _from_arena, (start, array.shape, array.dtype)


_loading: threading.local = threading.local()  # region, copy: where _from_arena reads, while _unpack runs


def _unpack(message: bytes, region: np.ndarray, copy: bool) -> Any:
    """What _pack packed into ``message`` and ``region``; its arrays are copies of the
    region's (``copy``) or views into it."""
    _loading.region, _loading.copy = region, copy
    try:
        return pickle.loads(message)
    finally:
        _loading.region = None


def _from_arena(start: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    array = np.ndarray(shape, dtype, _loading.region, start)
    return array.copy() if _loading.copy else array


def _forget_workers_after_fork() -> None:
    """A forked child does not own its parent's workers: it closes its copies of their
    pipes (so a worker still sees its caller exit) and forks its own when it needs one."""
    global _lock
    for worker in _workers:
        worker.conn.close()
    _workers.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)
