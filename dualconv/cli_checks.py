"""The command line's checks of its arguments and settings; each failure is one CLIError.

positive_int and positive_float are argparse types: a bad value is a usage error at
parse time. The other checks run before a command does any work: the thread settings
(DUALCONV_NUM_THREADS, DUALCONV_WORKERS), the backend (--backend, else
$DUALCONV_BACKEND, else auto) and --data-dir. read_images reads predict's images,
one line for each that cannot be read. cli.main prints a CLIError as one line,
``dualconv <command>: error: ...``, and exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

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


def read_images(paths: list[Path], size: tuple[int, ...]) -> tuple[dict[Path, np.ndarray], int]:
    """The images of ``paths`` that can be read at ``size``, and how many could not: each of
    those is one line on stderr. An image too large to open (Pillow's DecompressionBombError
    or its warning) is one of them."""
    from .datasets.images import read_image

    try:
        from PIL import Image
    except ImportError:
        raise CLIError("predict needs Pillow to read images: pip install pillow") from None
    images, failed = {}, 0
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                images[path] = read_image(path, size)
        except (ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            message = str(exc) if isinstance(exc, ValueError) else f"cannot read {path} as an image: {exc}"
            print(f"dualconv predict: error: {message}", file=sys.stderr)
            failed += 1
    return images, failed


def quiet_stdout() -> None:
    """After a BrokenPipeError: send what is left for stdout to devnull, so that
    Python's flush at exit does not fail again (the recipe in Python's signal docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass
    finally:
        os.close(devnull)
