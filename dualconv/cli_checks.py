"""The command line's checks of its arguments and settings; each failure is one CLIError.

positive_int and positive_float are argparse types: a bad value is a usage error at
parse time. The other checks run before a command does any work: the thread settings
(DUALCONV_NUM_THREADS, DUALCONV_WORKERS), the backend (--backend, else
$DUALCONV_BACKEND, else auto) and --data-dir. cli.main prints a CLIError as one line,
``dualconv <command>: error: ...``, and exits with status 1.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .backend import BACKENDS, set_backend
from .engine import num_threads, worker_kind


class CLIError(Exception):
    """A user-facing error: printed as one message, exit status 1."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def check_thread_settings() -> None:
    """DUALCONV_NUM_THREADS and DUALCONV_WORKERS, read before any work is done."""
    try:
        num_threads()
        worker_kind()
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def choose_backend(name: str | None) -> str:
    """Select the backend ``name`` (None: $DUALCONV_BACKEND, else auto); returns the one in use."""
    if name is None:
        name = os.environ.get("DUALCONV_BACKEND", "").strip().lower() or "auto"
        if name not in BACKENDS:
            raise CLIError(f"DUALCONV_BACKEND={name} is not a backend; set it to one of {', '.join(BACKENDS)}")
    try:
        return set_backend(name)
    except RuntimeError as exc:
        raise CLIError(f"{exc}; use --backend numpy (or auto)") from None


def check_data_dir(path: Path | None) -> None:
    if path is not None and not path.is_dir():
        raise CLIError(f"--data-dir {path} does not exist or is not a directory")
