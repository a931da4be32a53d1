"""Run a command with the emulated CuPy's kernels under AddressSanitizer and UBSan.

    python -m dualconv.testing.sanitized python -m pytest tests/gpu

Replaces this process with COMMAND in ``fake_cupy._native.sanitizer_env()`` (the ASan
runtime preloaded, as ASan must be the process's first library) plus
``DUALCONV_EMULATE_SANITIZE=1``, so every ``emulated_cupy()`` in it builds its kernels
with ``-fsanitize=address,undefined``: an out-of-bounds access or undefined behaviour in
a kernel aborts the command with a report. Where g++ has no ASan runtime it runs
nothing, says so on stderr, and exits 0: a toolchain without sanitizers skips the check.
"""
from __future__ import annotations

import os
import sys

from .fake_cupy import _native


USAGE = "usage: python -m dualconv.testing.sanitized COMMAND [ARGS...]"


def main(argv: list[str]) -> int:
    """Exec argv under the sanitizers; returns only when it cannot (2: no command or no such
    command; 0: --help, or no ASan)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    env = _native.sanitizer_env()
    if env is None:
        print(f"dualconv.testing.sanitized: skipped {' '.join(argv)!r}: g++ has no AddressSanitizer "
              f"runtime (libasan.so)", file=sys.stderr)
        return 0
    env[_native.SANITIZE_ENV] = "1"
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:  # no such command, or not executable
        print(f"dualconv.testing.sanitized: error: cannot run {argv[0]!r}: "
              f"{error.strerror or error} ({USAGE})", file=sys.stderr)
        return 2
    return 1  # not reached: execvpe replaces the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
