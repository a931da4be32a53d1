"""The output directory of ``dualconv train``, guarded so that nothing a user does loses work.

- It is checked before any data loads: created, and a probe file written and removed.
- It is locked for the whole run (``.dualconv.lock``, a POSIX lock holding the pid:
  the kernel drops it when the process ends, however it ends, and forked workers do
  not inherit it), so a second run into the same directory fails at once, naming the
  first one's pid.
- With ``--overwrite``, the earlier run's files are moved into ``DIR/replaced-run-<pid>``
  and deleted only once the new run's first checkpoint is saved; a run that ends before
  that (Ctrl-C, SIGTERM, an error) moves them back. After a SIGKILL they stay there.
- A save that fails (a full disk) is one CLIError naming the file and the reason;
  the file's previous version stays whole (``checkpoint.atomic_path``).
- SIGTERM is handled like Ctrl-C (``Terminated``), with exit status 143 instead of 130.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Iterator

from . import checkpoint, runs
from .cli_checks import CLIError
from .runs import CHECKPOINT

LOCK = ".dualconv.lock"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where it lands: handled as Ctrl-C, but the exit status is 143."""


def interrupt_status(exc: BaseException) -> int:
    return 143 if isinstance(exc, Terminated) else 130


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into Terminated in this process while the block runs (main thread only)."""
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a worker forked meanwhile: end as SIGTERM would
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (cli.main called from a thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def resume_command(out: Path, epochs: int, extra: str = "") -> str:
    """The command that continues the run in ``out`` to ``epochs`` epochs (the checkpoint keeps
    every other setting, but not how many epochs the run was to take), with ``extra`` options."""
    return f"dualconv train --out {out} --resume --epochs {epochs}{' ' + extra if extra else ''}"


@contextlib.contextmanager
def saving(path: Path, saved: int, out: Path, epochs: int) -> Iterator[None]:
    """A save of ``path`` whose OSError becomes one CLIError saying what is kept (``saved``
    epochs of a run to ``epochs``)."""
    try:
        yield
    except OSError as exc:
        kept = (f"the checkpoint of epoch {saved} is kept in {out}; continue from it with "
                f"{resume_command(out, epochs)}" if saved else "no checkpoint was saved")
        raise CLIError(f"cannot save {path}: {_reason(exc)}; {kept}") from None


class RunDirectory:
    """``--out`` of one run: checked, locked, the earlier run moved aside (see the module).

    A context manager: on the way out the lock is released, an earlier run still aside
    is moved back, and a directory this run created is removed again if it stayed empty.
    """

    def __init__(self, out: Path | None, resume: bool = False, overwrite: bool = False) -> None:
        self.path, self.resume, self.overwrite = out, resume, overwrite
        self.resumed: checkpoint.Checkpoint | None = None
        self.aside: Path | None = None
        self._created: list[Path] = []
        self._lock: int | None = None

    def __enter__(self) -> RunDirectory:
        try:
            if self.path is not None:
                self._open(self.path)
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> None:
        if self.aside is not None:
            self._put_back()
        if self._lock is not None and self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path / LOCK)
            os.close(self._lock)
            self._lock = None
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty

    def create_new(self, dataset: str, model: str) -> Path:
        """No --out: a new ``runs/<dataset>-<model>-<n>``, checked and locked like --out."""
        root = Path("runs")
        try:
            if not root.exists():
                self._make(root)
            self.path = runs.new_run_dir(root, dataset, model)
        except OSError as exc:
            raise CLIError(f"cannot create a run directory in {root.resolve()}: {_reason(exc)}; "
                           f"choose a writable place with --out") from None
        self._created.append(self.path)
        self._open(self.path)
        return self.path

    def first_checkpoint_saved(self) -> None:
        """The new run has a checkpoint: the earlier run it replaces can go."""
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    # -- steps of __enter__ -------------------------------------------------------------

    def _open(self, out: Path) -> None:
        if self.resume and not out.exists():
            raise CLIError(f"nothing to resume in {out}: it does not exist; drop --resume to start a new run")
        if out.exists() and not out.is_dir():
            raise CLIError(f"--out {out} is a file; give a directory")
        try:
            if not out.exists():
                self._make(out)
            probe = out / f".dualconv-probe-{os.getpid()}.tmp"
            probe.write_bytes(b"dualconv")
            probe.unlink()
        except OSError as exc:
            raise CLIError(f"--out {out} cannot be written: {_reason(exc)}; give a directory you can write "
                           f"to") from None
        self._lock = _take_lock(out)
        self._check_existing(out)

    def _make(self, directory: Path) -> None:
        """mkdir -p, remembering each directory made (to remove it again if the run leaves it empty)."""
        missing = [directory, *(p for p in directory.parents if not p.exists())]
        directory.mkdir(parents=True, exist_ok=True)
        self._created += sorted(missing, key=lambda p: len(p.parts))

    def _check_existing(self, out: Path) -> None:
        existing = runs.holds_run(out)
        if self.resume:
            if not (out / CHECKPOINT).is_file():
                if existing:
                    raise CLIError(f"{out} holds {', '.join(existing)} but no {CHECKPOINT} to resume from; pass "
                                   f"--overwrite instead of --resume to start over there, or choose another --out")
                print(f"no {CHECKPOINT} in {out}: starting from scratch")
                return
            try:
                self.resumed = checkpoint.load_checkpoint(out / CHECKPOINT)
            except ValueError as exc:
                raise CLIError(f"{exc}; delete it (or pass --overwrite instead of --resume) to start over") from None
            return
        if existing and not self.overwrite:
            raise CLIError(f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                           f"--overwrite to replace it, or choose another --out")
        if existing:
            self._move_aside(out)

    def _move_aside(self, out: Path) -> None:
        aside = out / f"replaced-run-{os.getpid()}"
        try:
            aside.mkdir()
            self.aside = aside
            for name in (*runs.RUN_FILES, *runs.PLOTS):
                if (out / name).exists():
                    os.replace(out / name, aside / name)
        except OSError as exc:
            raise CLIError(f"--overwrite: cannot move the earlier run in {out} aside: {_reason(exc)}") from None
        runs.clear_run(out)  # stale temporary files of a killed run
        print(f"--overwrite: the earlier run is kept in {aside} until this run's first checkpoint is saved")

    def _put_back(self) -> None:
        assert self.aside is not None and self.path is not None
        try:
            runs.clear_run(self.path)
            for moved in self.aside.iterdir():
                os.replace(moved, self.path / moved.name)
            self.aside.rmdir()
            self.aside = None
        except OSError as exc:
            print(f"dualconv train: the earlier run could not be put back: it is in {self.aside} "
                  f"({_reason(exc)})", flush=True)


def _take_lock(out: Path) -> int:
    """A POSIX lock (lockf) on ``out/.dualconv.lock`` holding our pid; CLIError naming the holder's pid."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return os.open(os.devnull, os.O_RDONLY)
    path = out / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise CLIError(f"--out {out} cannot be written: {_reason(exc)}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CLIError(f"--out {out} is in use by another dualconv train (pid {pid}); wait until it ends, "
                           f"or choose another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the run that held it removed it on its way out: lock the new file instead
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
