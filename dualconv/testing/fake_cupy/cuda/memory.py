"""cupy.cuda.memory for the emulated device: memory pools and allocators, as CuPy 14 has them.

``MemoryPool.malloc(size)`` rounds ``size`` up to 512 bytes and hands out a
block of that size from its free list if it has one, else new memory. A block
goes back to its pool's free list when the last array (or MemoryPointer) on it
is gone, and the next allocation of that size gets the same memory: what CuPy's
pool does, which a CUDA graph does not know about.

Allocations go through the current allocator (``cupy.cuda.using_allocator``,
``set_allocator``; the default pool's ``malloc`` otherwise) whenever they must:
during a capture, under an allocator other than the default, and always with
``emulated_cupy(reuse_memory=True)``. Otherwise, for speed, the stand-in makes a
plain NumPy array that no pool counts.
"""
import copy as _copy
import weakref as _weakref
from typing import Any as _Any, Callable as _Callable

import numpy as _np

from .. import _device

__all__ = ["Memory", "PooledMemory", "MemoryPointer", "MemoryPool", "alloc", "set_allocator",
           "get_allocator"]

_ALIGNMENT = 512
"""CuPy's pool rounds every allocation up to a multiple of this many bytes."""


def _capture_allows_malloc() -> None:
    """cudaMalloc is an unsafe call during a capture in the global and thread-local modes."""
    capture = _device.recording()
    if capture is not None and capture.mode != 2:  # runtime.streamCaptureModeRelaxed
        capture.invalidated = True
        raise _device.CUDARuntimeError("cudaErrorStreamCaptureUnsupported",
                                       "operation not permitted when stream is capturing")


class Memory:
    """cupy.cuda.Memory: device memory of ``size`` bytes, owned by this object."""

    def __init__(self, size: int) -> None:
        _capture_allows_malloc()
        self.size = int(size)
        self._raw = _np.empty(self.size, _np.uint8)
        self.device_id = 0

    @property
    def ptr(self) -> int:
        return int(self._raw.__array_interface__["data"][0])


class PooledMemory(Memory):
    """cupy.cuda.PooledMemory: a block of a pool, back to its free list when dropped."""

    def __init__(self, raw: _np.ndarray, pool: "MemoryPool") -> None:
        self.size, self._raw, self.device_id = raw.size, raw, 0
        self._pool = _weakref.ref(pool)

    def __del__(self) -> None:
        pool = self._pool()
        if pool is not None:
            pool._release(self._raw)


class MemoryPointer:
    """cupy.cuda.MemoryPointer: ``mem`` from ``offset`` on; arrays on it keep it alive."""

    def __init__(self, mem: Memory, offset: int) -> None:
        self.mem, self.device_id = mem, 0
        self._raw = mem._raw[int(offset):]
        self.__array_interface__ = self._raw.__array_interface__

    @property
    def ptr(self) -> int:
        return int(self._raw.__array_interface__["data"][0])

    def __add__(self, offset: int) -> "MemoryPointer":
        return MemoryPointer(self.mem, self.ptr - self.mem.ptr + int(offset))


class _ArrayPointer(MemoryPointer):
    """An emulated ndarray's ``data`` (made by _array.py): a MemoryPointer to its first
    element, ``ptr`` read once, when it is made."""

    ptr = 0  # an instance attribute, not the base class's property

    def __add__(self, offset: int) -> "MemoryPointer":
        pointer = _copy.copy(self)
        pointer.ptr = self.ptr + int(offset)
        return pointer


class MemoryPool:
    """cupy.cuda.MemoryPool: blocks reused by size (see the module docstring)."""

    def __init__(self, allocator: _Callable[[int], _Any] | None = None) -> None:
        self._free: dict[int, list[_np.ndarray]] = {}
        self._used = 0

    def malloc(self, size: int) -> MemoryPointer:
        """A pointer to ``size`` bytes (rounded up to 512): a freed block of that size if any."""
        size = -(-int(size) // _ALIGNMENT) * _ALIGNMENT
        blocks = self._free.get(size)
        if blocks:
            raw = blocks.pop()
        else:
            _capture_allows_malloc()
            raw = _np.empty(size, _np.uint8)
        self._used += size
        return MemoryPointer(PooledMemory(raw, self), 0)

    def _release(self, raw: _np.ndarray) -> None:
        self._used -= raw.size
        self._free.setdefault(raw.size, []).append(raw)

    def used_bytes(self) -> int:
        """Bytes of blocks in use."""
        return self._used

    def free_bytes(self) -> int:
        """Bytes of blocks held in the free lists."""
        return sum(size * len(blocks) for size, blocks in self._free.items())

    def total_bytes(self) -> int:
        return self.used_bytes() + self.free_bytes()

    def n_free_blocks(self) -> int:
        return sum(len(blocks) for blocks in self._free.values())

    def free_all_blocks(self, stream: _Any = None) -> None:
        """Give the free blocks back (a block in use stays in use)."""
        self._free.clear()


_DEFAULT_POOL = MemoryPool()
_device.DEFAULT_ALLOCATOR[0] = _DEFAULT_POOL.malloc


def _malloc(size: int) -> MemoryPointer:
    """Memory straight from the device, no pool (what ``set_allocator(None)`` selects)."""
    return MemoryPointer(Memory(size), 0)


def alloc(size: int) -> MemoryPointer:
    """``size`` bytes from the current allocator."""
    return _device.allocator()(size)


def get_allocator() -> _Callable[[int], MemoryPointer]:
    return _device.allocator()


def set_allocator(allocator: _Callable[[int], MemoryPointer] | None = None) -> None:
    """Make ``allocator`` current in this thread (None: plain device memory, no pool)."""
    _device.STATE.allocator = _malloc if allocator is None else allocator
