"""Compiled libraries kept on disk: named by a digest of what goes into them, built once,
put in place whole.

Both libraries dualconv compiles at first use go through here: the CPU kernels
(native.py, from kernels/cpu_*.c) and the emulated CuPy's CUDA-on-the-CPU modules
(dualconv/testing/fake_cupy/_native.py). Processes that build at once (the CPU engine's
worker, parallel test runs) each build in a temporary folder beside the target and rename
the result into place, which is atomic: one wins, and no process ever loads half a file.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path
from typing import Callable


def digest(*parts: str) -> str:
    """24 hex digits of the SHA-256 of ``parts``, each ended by a NUL (so ("ab", "c") and
    ("a", "bc") differ): a file name for what those parts build."""
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(part.encode())
        hashed.update(b"\0")
    return hashed.hexdigest()[:24]


def built(target: Path, build: Callable[[Path], Path], again: bool = False) -> Path:
    """``target``, built first where it is missing or cut short (or, with ``again``, in any
    case): ``build(scratch)`` compiles into the empty folder ``scratch`` and returns the
    file it made, which is then renamed to ``target``. Whatever ``build`` raises
    propagates, and the scratch folder is removed."""
    if again or not target.is_file() or not whole(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            os.replace(build(Path(scratch)), target)
    return target


def whole(path: Path) -> bool:
    """Whether a library file is all there: for ELF, the section header table (which the
    linker writes last) lies within the file. Loading a file cut short can kill the
    process (SIGBUS) rather than raise, so a cut file must be caught before it is loaded.
    True for other formats, which this cannot tell."""
    with open(path, "rb") as file:
        header = file.read(64)
        size = os.fstat(file.fileno()).st_size
    if header[:4] != b"\x7fELF":
        return True
    if len(header) < 52:
        return False
    order = "<" if header[5] == 1 else ">"
    wide = header[4] == 2  # 64-bit: e_shoff at 40, e_shentsize and e_shnum at 58; 32-bit: 32, 46
    if wide and len(header) < 64:
        return False
    (offset,) = struct.unpack_from(order + ("Q" if wide else "I"), header, 40 if wide else 32)
    entry, count = struct.unpack_from(order + "HH", header, 58 if wide else 46)
    return offset + entry * count <= size
