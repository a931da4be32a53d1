"""cupy.cuda for the emulated device: one device, id 0, that reports itself as emulated;
its streams and graphs (stream.py, graph.py) and memory pools (memory.py)."""
import contextlib as _contextlib
from typing import Any as _Any, Callable as _Callable, Iterator as _Iterator

from .. import _device
from . import graph, memory, runtime, stream
from .graph import Graph
from .memory import Memory, MemoryPointer, MemoryPool, alloc, get_allocator, set_allocator
from .stream import Stream, get_current_stream

__all__ = ["Device", "runtime", "graph", "memory", "stream", "Graph", "Memory", "MemoryPointer",
           "MemoryPool", "alloc", "get_allocator", "set_allocator", "using_allocator", "Stream",
           "get_current_stream"]


@_contextlib.contextmanager
def using_allocator(allocator: _Callable[[int], MemoryPointer] | None = None) -> _Iterator[None]:
    """Within the block, ``allocator`` (``size -> MemoryPointer``, e.g. ``pool.malloc``) gives
    this thread's device memory; None: plain device memory, no pool."""
    saved = _device.STATE.allocator
    set_allocator(allocator)
    try:
        yield
    finally:
        _device.STATE.allocator = saved


class Device:
    """cupy.cuda.Device: the one emulated device."""

    def __init__(self, device: _Any = None) -> None:
        index = 0 if device is None else int(device)
        if index != 0:
            raise ValueError(f"the emulated CuPy has one device (0), got device {index}")
        self.id = 0

    @property
    def compute_capability(self) -> str:
        props = runtime.getDeviceProperties(0)
        return f"{props['major']}{props['minor']}"

    def synchronize(self) -> None:
        """Wait for the device (one sync); refused while a stream captures."""
        _device.synchronize()

    def use(self) -> None:
        pass

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: _Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<CUDA Device 0>"
