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


def main(argv: list[str]) -> int:
    """Exec argv under the sanitizers; returns only when it cannot (2: no command; 0: no ASan)."""
    if not argv:
        print("usage: python -m dualconv.testing.sanitized COMMAND [ARGS...]", file=sys.stderr)
        return 2
    env = _native.sanitizer_env()
    if env is None:
        print(f"dualconv.testing.sanitized: skipped {' '.join(argv)!r}: g++ has no AddressSanitizer "
              f"runtime (libasan.so)", file=sys.stderr)
        return 0
    env[_native.SANITIZE_ENV] = "1"
    os.execvpe(argv[0], argv, env)
    return 1  # not reached: execvpe replaces the process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
