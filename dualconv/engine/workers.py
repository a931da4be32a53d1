"""Worker processes: a second core without the GIL (Linux).

Two Python threads share one GIL, which every NumPy call takes back when it ends, so
threads making many short calls mostly wait on each other; a forked process does not.

- A worker is forked from the caller the first time one is needed, so it starts with
  NumPy and dualconv imported, and it is kept for later calls. It holds its BLAS at one
  thread (the caller's own share uses the other core) and runs on a core of its own
  where the caller may choose one.
- A call is a module-level function and its arguments, pickled with its arrays in a
  shared mapping (arena.py); the result comes back the same way. A call too large for
  the mapping gets a new worker with a larger one.
- A caller that knows a call names the same objects as the last one it kept in its slot
  (``start(call, keep=True)``, then ``start_again``) sends the same bytes again, having
  copied the arrays alone into the slot: no pickling.
- A call packed to the same bytes as the last one in its slot names the same objects
  with new array values (a training step's twins, with this step's parameters). A
  function with an ``arguments_reusable(args)`` predicate, true for freshly unpickled
  arguments it can take again, then gets the objects unpickled last time, their arrays
  showing the new values (engine/reuse.py says when that equals a fresh unpickle).
- A worker runs the code and environment it was forked with. When the caller's code
  (a cell redefining a layer, a reload: ``code_fingerprint``) or the kernels' environment
  settings change, the next ``ready_workers`` forks new ones.
- A worker that dies, or cannot load a call (it names a class made after the fork),
  answers DIED; ``Worker.start`` answers False for a call that cannot be pickled. The
  caller then runs the call itself. The worker ignores Ctrl-C; an interrupted caller
  stops it.
- Between calls the worker, and a caller waiting for a result, poll for SPIN_SECONDS
  before blocking: a core woken from sleep answers late and runs cold.
"""
from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable

from .arena import Answers, Packed, Replies, TooLarge, halves, pack, unpack
from .fingerprints import class_fingerprint, code_fingerprint, code_if_due, environment_fingerprint
from .pinning import nth_core, pin

Call = tuple[Callable[..., Any], tuple[Any, ...]]  # a module-level function and its arguments

ARENA_BYTES = 32 * 2**20
"""A new worker's shared mapping: a quarter for each of two call slots, half for results. Pages
never written take no memory; a call too large for its slot gets a worker with slots twice it."""

SPIN_SECONDS = 0.002
"""How long the worker and a waiting caller poll their pipe before blocking on it: longer
keeps a core awake between a training step's calls, shorter frees it sooner
(benchmarks/lenet_vs_torch.py chooses it)."""

SHRINK_AFTER_CALLS = 8
"""A worker grown for a large call goes back to ARENA_BYTES after this many forward calls in
a row that fit it: fewer forks when large and small calls alternate, memory back soon after."""

ANSWERS_KEPT = 4
"""How many answers a caller keeps unpacked, and of how many forms a worker keeps the packing
(arena.Answers, arena.Replies): a training step's forward and backward, with room for a
second model trained at once; a few small objects kept against pickling again."""

STALL_CHECK_SECONDS = 1.0
"""How often a caller waiting for a worker checks that it still runs: a worker stopped
(SIGSTOP) or gone is given up within this long, and its share computed by the caller."""

DIED: Any = object()  # Worker.finish's answer when the worker died or could not load the call
_UNKNOWN_HERE = "dualconv worker: the call names what this worker does not have"

workers: list["Worker"] = []
in_worker = False  # this process is a worker
lock = threading.Lock()  # held by the one thread of this process using the workers


def available() -> bool:
    """Whether worker processes can run here: on Linux, where a fork copies this process,
    in a process allowed to have children (a multiprocessing.Pool's workers are not)."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def ready_workers(count: int, check_code: bool, classes: Any = ()) -> list["Worker"]:
    """Up to ``count`` live workers running the caller's code: dead ones replaced, and,
    when ``check_code`` or CODE_CHECK_SECONDS have passed, stale ones too (at every call,
    one forked under other WORKER_ENVIRONMENT values); so is a worker that ran another class
    of the same name as one of ``classes`` (the layer classes a call names: a module
    reloaded, a notebook cell run again). Fewer (with a warning, once)
    where the system refuses a process or its memory: the caller then computes those
    shares itself."""
    code, environment = code_if_due(check_code), environment_fingerprint()
    names = {(cls.__module__, cls.__qualname__): class_fingerprint(cls) for cls in classes}
    try:
        for i, worker in enumerate(workers):
            stale = any(worker.classes.get(name, mark) != mark for name, mark in names.items())
            stale = stale or worker.environment != environment or (code is not None and code != worker.code)
            if not worker.alive() or stale:
                worker.stop()
                workers[i] = Worker(ARENA_BYTES, nth_core(i + 1))
        while len(workers) < count:
            workers.append(Worker(ARENA_BYTES, nth_core(len(workers) + 1)))
    except OSError as error:  # a process limit (fork), or no memory for the mapping
        workers[:] = [worker for worker in workers if worker.alive()]
        _warn_once(f"dualconv: cannot start a worker process ({type(error).__name__}: {error}); "
                   f"the work runs in the calling process, on one core")
    for worker in workers[:count]:
        worker.classes.update(names)
    return workers[:count]


def release_workers() -> None:
    """Stop every worker process and free its memory; the next batch in parts forks new ones."""
    while workers:
        workers.pop().stop()


class Worker:
    """One worker process, its pipe and its shared mapping (the caller's side)."""

    def __init__(self, arena_bytes: int, core: int | None) -> None:
        self.arena_bytes, self.core = arena_bytes, core
        self.code, self.environment = code_fingerprint(), environment_fingerprint()
        self.classes: dict[tuple[str, str], int] = {}  # (module, name) -> class_fingerprint, of calls sent
        self.small_calls = 0  # forward calls in a row that a mapping of ARENA_BYTES would hold
        self.arena = mmap.mmap(-1, arena_bytes)  # MAP_SHARED: the child sees the same pages
        self.call_slots, self.results_half = _slots(self.arena)
        self.kept: list[Packed | None] = [None, None]  # per call slot: the last call started with keep
        self.answers = Answers(self.results_half, ANSWERS_KEPT)  # unpacked once each
        self.conn, child_conn = multiprocessing.Pipe()
        self.readable = _poller(self.conn)
        context = multiprocessing.get_context("fork")
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a process that has threads (a BLAS pool): the
            # child runs only _serve, which takes no lock those threads may hold
            warnings.simplefilter("ignore", DeprecationWarning)
            self.process = context.Process(target=_serve, args=(child_conn, self.conn, self.arena, core),
                                           name="dualconv-worker", daemon=True)
            self.process.start()
        child_conn.close()
        self.busy = False

    def alive(self) -> bool:
        return self.process.pid is not None and self.process.is_alive()

    def start(self, call: Call, slot: int = 0, keep: bool = False) -> bool:
        """Send ``call``, its arrays in call slot ``slot`` (0 or 1: the worker may keep views
        into one slot while a call in the other runs); False (nothing sent) when it cannot
        be pickled or the worker died. With ``keep``, the packed call is kept for
        ``start_again``."""
        self.kept[slot] = None
        try:
            placed: list[Any] | None = [] if keep else None
            message, used = pack(call, self.call_slots[slot], placed)
            if self._shrinks(slot, used):
                return self.start(call, slot, keep)
            message = bytes([slot]) + message
            if placed is not None:
                self.kept[slot] = Packed(message, used, placed)
        except TooLarge as large:
            try:
                self._grow(2 * large.needed)
            except OSError as error:  # no memory for a larger mapping, or no process
                _warn_once(f"dualconv: cannot grow a worker for a call of {large.needed} bytes "
                           f"({type(error).__name__}: {error}); it runs in the calling process")
                return False
            return self.start(call, slot, keep)
        except Exception as error:  # cannot be pickled (a lambda, a lock, a __reduce__ that refuses)
            _warn_once(f"dualconv: a call cannot go to a worker process ({type(error).__name__}: {error}); "
                       f"it runs in the calling process, on one core. A model whose layers pickle "
                       f"(no lambdas or open files as attributes) uses both.")
            return False
        return self._send(message)

    def start_again(self, slot: int, arrays: list[Any]) -> bool:
        """Send the call kept in ``slot`` again, ``arrays`` (one per array it packed, in the
        order ``kept[slot].arrays`` lists them) copied into its places: for a call of the
        same objects, their arrays' values new. False (nothing sent) where none is kept,
        an array's shape or dtype differs, the worker died or was made anew: then ``start`` it."""
        kept = self.kept[slot]
        if kept is None or not kept.refill(arrays):
            return False
        try:
            if self._shrinks(slot, kept.used):
                return False  # a new worker, with nothing kept
        except Exception:  # no process or memory for the new one: as start answers then
            return False
        return self._send(kept.message)

    def _send(self, message: bytes) -> bool:
        try:
            self.conn.send_bytes(message)
        except OSError:
            self.stop()
            return False
        self.busy = True
        return True

    def finish(self) -> tuple[bool, Any]:
        """(True, result) or (False, the exception raised); DIED if the worker died. The
        result's arrays of numbers are views into this worker's results region, valid until its
        next call: the caller joins or sums them first (a copy here would cost a pass over
        every gradient each step). A result of the bytes of an earlier one is the same objects
        (arena.Answers): the caller reads them and changes none of them."""
        try:
            _spin_until_readable(self.readable)
            while not self.readable.poll(STALL_CHECK_SECONDS * 1000):  # milliseconds
                if not self.alive() or _stopped(self.process.pid):
                    _warn_once("dualconv: a worker process stopped answering; the caller computes its share")
                    self.stop()
                    return DIED
            message = self.conn.recv_bytes()
        except (EOFError, OSError):
            self.stop()
            return DIED
        self.busy = False
        ok, value, needed = self.answers.unpack(message)
        if not ok and isinstance(value, str) and value == _UNKNOWN_HERE:
            self.stop()  # forked before the call's code existed: the next fork has it
            return DIED
        if needed > ARENA_BYTES // 2:
            self.small_calls = 0  # a large result: keep a grown mapping
        if needed > len(self.results_half):
            self._grow(needed)  # this result came inline; later ones fit the mapping
        return ok, value

    def _shrinks(self, slot: int, used: int) -> bool:
        """After SHRINK_AFTER_CALLS forward calls in a row that a new worker's slot would
        hold, a grown worker becomes a new one of ARENA_BYTES (True: send the call again)."""
        if self.arena_bytes == ARENA_BYTES or slot != 0:
            return False
        self.small_calls = self.small_calls + 1 if used <= ARENA_BYTES // 4 else 0
        if self.small_calls < SHRINK_AFTER_CALLS:
            return False
        self.stop()
        self.__init__(ARENA_BYTES, self.core)  # type: ignore[misc]
        return True

    def _grow(self, quarter_bytes: int) -> None:
        """Become a new worker whose mapping's quarters (call slots) hold ``quarter_bytes``."""
        self.stop()
        self.__init__(max(4 * quarter_bytes, self.arena_bytes), self.core)  # type: ignore[misc]

    def stop(self) -> None:
        """End the process (SIGKILL: a stopped one ends too) and close its pipe."""
        self.busy, self.kept = False, [None, None]
        self.answers.clear()
        self.conn.close()
        if self.process.pid is not None and self.process.is_alive():
            self.process.kill()
            self.process.join()


def _stopped(pid: int | None) -> bool:
    """Whether the process is stopped (SIGSTOP, a debugger), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _serve(conn: Any, parents_end: Any, arena: mmap.mmap, core: int | None) -> None:
    """The worker's loop: run each call received, send back its result or exception."""
    parents_end.close()  # so that the caller's end closing (it exited) ends recv_bytes
    if core is not None:
        pin({core})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller handles Ctrl-C and stops us
    keep_freed_memory()
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")  # the caller's own share uses the other core
    global in_worker
    in_worker = True  # a call never forks or threads again (cores.num_threads)
    call_slots, results_half = _slots(arena)
    readable = _poller(conn)
    last: list[tuple[bytes, Call] | None] = [None, None]  # per call slot: the last call, packed and unpacked
    replies = Replies(results_half, ANSWERS_KEPT)  # an answer of a form sent before: no pickling
    while True:
        try:
            _spin_until_readable(readable)
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        slot, packed = message[0], message[1:]
        try:
            previous = last[slot]
            if previous is not None and previous[0] == packed:
                function, args = previous[1]  # the same bytes: the same objects, over the slot's new values
            else:
                last[slot] = None
                function, args = unpack(packed, call_slots[slot], copy=False)
                if _reusable(function, args):
                    last[slot] = (packed, (function, args))
        except Exception:  # a class or function defined in the caller after this fork
            outcome: tuple[bool, Any] = (False, _UNKNOWN_HERE)
        else:
            try:
                outcome = (True, function(*args))
            except Exception as error:
                outcome = (False, _picklable(error))
        try:
            reply = replies.pack((*outcome, 0))
        except TooLarge as large:
            reply = pickle.dumps((*outcome, large.needed), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(reply)
        except OSError:  # the caller is gone
            return


def _reusable(function: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """Whether the function's ``arguments_reusable`` predicate takes these freshly unpickled
    arguments; False without one, or where it raises (the call then runs as usual)."""
    predicate = getattr(function, "arguments_reusable", None)
    try:
        return predicate is not None and bool(predicate(args))
    except Exception:
        return False


def _slots(arena: mmap.mmap) -> tuple[tuple[Any, Any], Any]:
    """The mapping's halves: two call slots (the caller writes) and the results (the worker writes)."""
    calls, results = halves(arena)
    middle = len(calls) // 2
    return (calls[:middle], calls[middle:]), results


def keep_freed_memory() -> bool:
    """Tell glibc's malloc, in this worker only, to keep the memory a call frees for the
    next (no trimming; blocks under 32 MB from the heap): a call allocates the same tens
    of MB each time, and returning them after each made every call fault them in again.
    The caller's process and its settings are the user's. False where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30))


_warned = False


def _warn_once(message: str) -> None:
    """A RuntimeWarning, the first time only (a training loop would repeat it every step)."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _poller(conn: Any) -> Any:
    """A select.poll object for input on ``conn``: made once, where Connection.poll makes
    a selector every call (several times the cost, in a loop that waits for an answer)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return poller


def _spin_until_readable(readable: Any) -> None:
    """Poll (a _poller) until its connection has something to read, or has closed, or
    SPIN_SECONDS have passed (then its poll(milliseconds) blocks, as Connection.poll does)."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while not readable.poll(0) and time.perf_counter() < deadline:
        pass


def _picklable(error: Exception) -> Exception:
    """``error`` with the worker's traceback as a note (the frames a caller would not see
    otherwise), or a RuntimeError with its type, message and that note when it cannot be
    pickled."""
    note = "in dualconv's worker process:\n" + "".join(traceback.format_exception(error)).rstrip()
    try:
        error.add_note(note)
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        plain = RuntimeError(f"{type(error).__name__}: {error}")
        plain.add_note(note)
        return plain


def _forget_workers_after_fork() -> None:
    """A forked child does not own its parent's workers: it closes its copies of their
    pipes (so a worker still sees its caller exit) and forks its own when it needs one."""
    global lock
    for worker in workers:
        worker.conn.close()
    workers.clear()
    lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)
