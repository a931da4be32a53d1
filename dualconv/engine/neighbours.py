"""Other dualconv processes computing on this machine, so that runs at once share the cores.

Two runs that each spread their batches over every core ask for twice the cores there
are, and their workers then wait on each other: together they train slower than one run
alone. So each process says when it computes, and looks before it spreads a batch:

* While a process is inside an engine call (``computing()``), it holds a shared flock on
  a file of its own, ``<tmp>/dualconv-<uid>/<pid>``.
* ``share(wanted)``: the cores this process may use now. It counts the other processes
  whose file is locked (a non-blocking exclusive flock fails on those) and splits the
  cores between them and itself: cores // (others + 1), at least 1. A process seen
  computing counts for HOLD_SECONDS after (between two calls it holds no lock), and the
  directory is read at most every SCAN_SECONDS.

A flock goes with its process, so a run that ends or is killed stops counting at once;
the next process that finds its file unlocked and its process gone removes it (a process
whose file was removed makes it again). Anything the directory refuses (no temporary
directory, no flock, a directory another user could write) turns the sharing off, and
nothing here waits on another process: the engine is an optimisation.
The split changes only how many cores run the parts, never the parts, so the results are
the same bits (passes.py).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import stat
import tempfile
import threading
import time
from typing import Iterator

try:
    import fcntl
except ImportError:  # not on a POSIX system: no sharing
    fcntl = None  # type: ignore[assignment]

HOLD_SECONDS = 1.0
"""How long another process counts after it was last seen computing."""

SCAN_SECONDS = 0.2
"""The directory is read at most this often; between reads the last count holds."""

_lock = threading.Lock()
_file: int | None = None  # this process's open file, once made; -1 when sharing is off
_depth = 0  # engine calls in progress in this process (threads may nest them)
_scanned_at = -1e9
_seen_until: dict[str, float] = {}  # other process -> when it stops counting


def directory() -> str:
    """Where the processes' files are: one directory per user, in the temporary directory."""
    return os.path.join(tempfile.gettempdir(), f"dualconv-{os.getuid()}")


def _own_file() -> int:
    """This process's file descriptor (made at the first call, made again if another process
    removed the file), or -1 when sharing is off: no flock, or a directory that is not this
    user's alone."""
    global _file
    if _file is not None and _file >= 0:
        try:
            if os.fstat(_file).st_nlink > 0:
                return _file
        except OSError:
            pass
        with contextlib.suppress(OSError):
            os.close(_file)
        _file = None
    if _file is None:
        _file = -1
        if fcntl is None or not hasattr(os, "getuid"):
            return _file
        try:
            os.makedirs(directory(), mode=0o700, exist_ok=True)
            info = os.lstat(directory())
            if (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
                    and not info.st_mode & 0o022):
                _file = os.open(os.path.join(directory(), str(os.getpid())),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            pass
    return _file


@contextlib.contextmanager
def computing() -> Iterator[None]:
    """Mark this process as computing while the block runs (a shared flock on its file).
    Never waits: when the lock is not free at once (another process is checking the file),
    this call goes unmarked."""
    global _depth
    pid = os.getpid()
    with _lock:
        fd = _own_file() if _depth == 0 else _file
        if fd is not None and fd >= 0 and _depth == 0:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        _depth += 1
    try:
        yield
    finally:
        if os.getpid() == pid:  # not in a child forked meanwhile: it starts afresh
            with _lock:
                _depth -= 1
                if fd is not None and fd >= 0 and _depth == 0:
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)


def share(wanted: int, cores: int) -> int:
    """Of ``wanted`` cores (out of the ``cores`` this process may use), how many to use now:
    all while no other process computes, else cores // (processes computing), at least 1."""
    if wanted <= 1:
        return wanted
    others = _others()
    if not others:
        return wanted
    return max(1, min(wanted, cores // (others + 1)))


def _others() -> int:
    """Other processes computing now, or within HOLD_SECONDS."""
    global _scanned_at
    now = time.monotonic()
    with _lock:
        if now - _scanned_at >= SCAN_SECONDS and _own_file() >= 0:
            _scanned_at = now
            for name in _computing_now():
                _seen_until[name] = now + HOLD_SECONDS
        for name, until in list(_seen_until.items()):
            if until < now:
                del _seen_until[name]
        return len(_seen_until)


def _computing_now() -> list[str]:
    """The other processes whose file is locked; unlocked files (of runs that ended) are removed."""
    busy: list[str] = []
    try:
        names = os.listdir(directory())
    except OSError:
        return busy
    mine = str(os.getpid())
    for name in names:
        if name == mine or not name.isdigit():
            continue
        path = os.path.join(directory(), name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy.append(name)
        except OSError:
            pass
        else:
            if not _alive(int(name)):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        finally:
            os.close(fd)
    return busy


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (an idle run keeps its file between calls)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but is another user's
        pass
    return True


def _remove_own_file() -> None:
    """At exit: this process's file goes (a run that is killed leaves it to the next one)."""
    if _file is not None and _file >= 0:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory(), str(os.getpid())))


def _forget_after_fork() -> None:
    """A forked child is another process: it closes the parent's file (whose lock is the
    parent's: a child holding it open would keep a killed parent counted) and makes its
    own when it computes."""
    global _file, _depth, _scanned_at, _lock
    if _file is not None and _file >= 0:
        with contextlib.suppress(OSError):
            os.close(_file)  # closing one of the descriptors leaves the parent's lock as it is
    _file, _depth, _scanned_at, _lock = None, 0, -1e9, threading.Lock()
    _seen_until.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_remove_own_file)
