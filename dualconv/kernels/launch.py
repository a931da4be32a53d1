"""How a CUDA kernel launch is described, laid out and sized, without CuPy.

A plan (cuda_plans.py) returns a ``Launch``: kernel name, grid, block and the
arguments in the kernel's parameter order, where arrays are ``Input`` (read
in a stated memory order), arrays updated in place, or ``Output`` (allocated
by the launcher). ``execute`` runs a Launch with any array module and any
launcher: CuPy on a GPU, the emulated CuPy or the g++ harness on a CPU.

Index width: every kernel has a 32-bit (``int``) and a 64-bit (``long
long``) instantiation. ``index_dtype`` picks int32 whenever every index a
launch can form fits in it, as PyTorch's canUse32BitIndexMath does; 32-bit
kernels divide by multiplying with a host-computed ``magic`` number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

BLOCK = 256
"""Threads per block."""

MAX_GRID = 65535
"""Most blocks a launch asks for; grid-stride loops cover any remainder."""

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Output:
    """An output buffer the launcher allocates (C-contiguous, uninitialized); the
    caller gets ``buffer.transpose(view)``, or the buffer itself when view is None."""
    shape: tuple[int, ...]
    dtype: np.dtype
    view: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Input:
    """An input the kernel reads as the C-contiguous ``array.transpose(axes)``:
    free when that view already is C-contiguous, else the launcher copies once."""
    array: Any
    axes: tuple[int, ...]

    @property
    def laid_out(self) -> bool:
        """Whether ``array.transpose(axes)`` is C-contiguous already: read with no copy."""
        a = self.array
        expected = np.dtype(a.dtype).itemsize
        for axis in reversed(self.axes):
            if a.shape[axis] > 1 and a.strides[axis] != expected:
                return False
            expected *= a.shape[axis]
        return True


@dataclass(frozen=True)
class Launch:
    """One kernel launch: ``name<<<grid, block>>>(*args)``.

    args, in the kernel's parameter order: ``Input`` arrays, arrays updated in
    place (C-contiguous; passed as they are), ``Output`` buffers, and NumPy
    scalars of the kernel's parameter types.
    """
    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Any, ...]

    @property
    def outputs(self) -> tuple[Output, ...]:
        return tuple(a for a in self.args if isinstance(a, Output))


def blocks(work: int) -> int:
    """Blocks of BLOCK threads for ``work`` items, capped at MAX_GRID."""
    return min(MAX_GRID, max(1, -(-work // BLOCK)))


def launch_1d(name: str, work: int, args: Sequence[Any]) -> Launch:
    """A 1-D launch with one thread per work item (grid-stride beyond MAX_GRID blocks)."""
    return Launch(name, (blocks(work), 1, 1), (BLOCK, 1, 1), tuple(args))


def index_dtype(extents: Sequence[int], work: int) -> np.dtype:
    """int32 when every index fits in it, else int64.

    extents: element counts of every array, or index range, the kernel
    touches; work: the items of its grid-stride loop, whose index reaches
    work plus the grid's thread count before the loop ends.
    """
    fits = max(*extents, work) + blocks(work) * BLOCK <= INT32_MAX
    return np.dtype(np.int32 if fits else np.int64)


def magic(d: int) -> np.uint64:
    """Division by d without a divide, for 0 <= n < 2^31 (PyTorch's IntDivider):
    n // d == (umulhi(n, m) + n) >> s; returns m | s << 32 (DcDiv<int>, common.cuh)."""
    if not 1 <= d <= INT32_MAX:
        raise ValueError(f"divisor {d} is outside [1, 2^31)")
    s = (d - 1).bit_length()
    m = ((1 << 32) * ((1 << s) - d)) // d + 1
    return np.uint64(m | s << 32)


def as_laid_out(a: Any, fallback: tuple[int, ...]) -> Input:
    """``a`` read as it lies in memory when that is some axis permutation of a
    C-contiguous array (batch-first, batch-last, ...): no copy. Otherwise (a
    slice, a broadcast, negative strides) it is copied in ``fallback`` order."""
    itemsize = np.dtype(a.dtype).itemsize
    axes = tuple(sorted(range(len(a.shape)), key=lambda k: -a.strides[k] if a.shape[k] > 1 else 0))
    expected = itemsize
    for k in reversed(axes):
        if a.shape[k] > 1 and a.strides[k] != expected:
            return Input(a, fallback)
        expected *= a.shape[k]
    return Input(a, axes)


def element_strides(inp: Input) -> tuple[int, ...]:
    """The strides, in elements, of ``inp`` as the kernel reads it, per axis of ``inp.array``."""
    strides = [0] * len(inp.axes)
    step = 1
    for axis in reversed(inp.axes):
        strides[axis] = step
        step *= inp.array.shape[axis]
    return tuple(strides)


def execute(launch: Launch, xp: Any, call: Callable[[Launch, tuple[Any, ...]], None]) -> Any:
    """Run a plan: lay out inputs, allocate outputs with ``xp``, then
    ``call(launch, args)``. Returns what the NumPy twin returns: None, one
    array, or a tuple of them."""
    args: list[Any] = []
    outputs: list[Any] = []
    for a in launch.args:
        if isinstance(a, Output):
            buf = xp.empty(a.shape, dtype=a.dtype)
            outputs.append(buf if a.view is None else buf.transpose(a.view))
            args.append(buf)
        elif isinstance(a, Input):
            args.append(xp.ascontiguousarray(a.array.transpose(a.axes)))
        else:
            args.append(a)
    call(launch, tuple(args))
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
