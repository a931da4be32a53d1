"""The CUDA sources: find kernels/*.cu and join them into one translation unit.

The .cu files live in the repository's top-level kernels/ directory. A wheel
ships them inside this package as ``dualconv.kernels.cuda_src`` (mapped in
pyproject.toml); a run from the source tree (PYTHONPATH, or an editable
install that does not map them) reads the top-level kernels/ directly.
"""
from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any

PACKAGE = "dualconv.kernels.cuda_src"
"""Where an installed wheel keeps kernels/*.cu."""


def kernel_dir() -> Any:
    """The directory holding the .cu files: a Traversable (installed) or a Path."""
    try:
        installed = importlib.resources.files(PACKAGE)
        if any(entry.name.endswith(".cu") for entry in installed.iterdir()):
            return installed
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "kernels"


def kernel_sources() -> dict[str, Any]:
    """{file name: Traversable} for every kernels/*.cu and *.cuh, sorted by name."""
    root = kernel_dir()
    found = {e.name: e for e in root.iterdir() if e.name.endswith((".cu", ".cuh"))}
    if not any(name.endswith(".cu") for name in found):
        raise FileNotFoundError(f"no CUDA kernel sources (*.cu) found in {root}")
    return dict(sorted(found.items()))


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def module_source() -> str:
    """Every kernels/*.cu joined into one translation unit.

    ``#include "x.cuh"`` is replaced by the header's text (once), and ``#line``
    directives keep the original file names and line numbers, so compiler
    messages read like ``"im2col.cu"(12): error ...``.
    """
    sources = kernel_sources()
    included: set[str] = set()

    def expand(name: str) -> list[str]:
        out = [f'#line 1 "{name}"']
        for lineno, line in enumerate(sources[name].read_text().splitlines(), start=1):
            match = _INCLUDE.match(line)
            if match is None:
                out.append(line)
                continue
            header = match.group(1)
            if header not in sources:
                raise FileNotFoundError(f'{name}:{lineno}: #include "{header}" not in kernels/')
            if header not in included:
                included.add(header)
                out.extend(expand(header))
            out.append(f'#line {lineno + 1} "{name}"')
        return out

    lines: list[str] = []
    for name in sources:
        if name.endswith(".cu"):
            lines.extend(expand(name))
    return "\n".join(lines) + "\n"
