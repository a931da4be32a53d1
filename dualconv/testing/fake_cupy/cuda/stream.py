"""cupy.cuda.stream for the emulated device: streams, the current stream, and capture.

``Stream()`` is a new stream; ``with stream:`` (or ``stream.use()``) makes it
current in this thread, and ``get_current_stream()`` says which is current
(``Stream.null``, the legacy default stream, unless one was made current).
Work issued while the current stream captures is recorded, not run (see
fake_cupy/_device.py); ``end_capture()`` gives the record as a cupy.cuda.Graph.
The emulated device runs work when it is issued, so streams order nothing else.
"""
import itertools as _itertools
from typing import Any as _Any

from .. import _device
from . import graph as _graph, runtime as _runtime

__all__ = ["Stream", "get_current_stream"]

_pointers = _itertools.count(0x7F0000)


class Stream:
    """cupy.cuda.Stream (CuPy 14's arguments and methods; see the module docstring)."""

    null: "Stream"
    ptds: "Stream"

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None) -> None:
        if null:
            self.ptr, self.device_id = 0, -1
        elif ptds:
            self.ptr, self.device_id = _runtime.streamPerThread, -1
        else:
            self.ptr, self.device_id = next(_pointers) * 16, 0
        self._non_blocking = bool(non_blocking) and not null and not ptds
        self._priority = 0 if priority is None else int(priority)

    def __eq__(self, other: _Any) -> bool:
        return isinstance(other, Stream) and self.ptr == other.ptr

    def __hash__(self) -> int:
        return self.ptr

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ptr} (device {self.device_id})>"

    def __enter__(self) -> "Stream":
        _device.STATE.stack.append(_device.STATE.current)
        _device.STATE.current = None if self.ptr == 0 else self
        return self

    def __exit__(self, *exc: _Any) -> None:
        _device.STATE.current = _device.STATE.stack.pop()

    def use(self) -> "Stream":
        """Make this stream current (until another is)."""
        _device.STATE.current = None if self.ptr == 0 else self
        return self

    @property
    def done(self) -> bool:
        if self.ptr in _device.CAPTURES:
            _device.synchronize(self)
        return True

    @property
    def is_non_blocking(self) -> bool:
        return self._non_blocking

    @property
    def priority(self) -> int:
        return self._priority

    def synchronize(self) -> None:
        """Wait for the stream's work (one sync); refused while it captures."""
        _device.synchronize(self)

    def begin_capture(self, mode: int | None = None) -> None:
        """Record the work issued to this stream until end_capture (relaxed mode by default).

        Raises RuntimeError on the default stream, as CuPy does."""
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if self.ptr in _device.CAPTURES:
            raise _device.CUDARuntimeError("cudaErrorIllegalState",
                                           "operation not permitted when stream is capturing")
        mode = _runtime.streamCaptureModeRelaxed if mode is None else int(mode)
        _device.CAPTURES[self.ptr] = _device.Capture(self, mode)

    def end_capture(self) -> _graph.Graph:
        """The work recorded since begin_capture, as a Graph to launch."""
        capture = _device.CAPTURES.pop(self.ptr, None)
        if capture is None:
            raise _device.CUDARuntimeError("cudaErrorIllegalState",
                                           "the stream is not capturing")
        if capture.invalidated:
            raise _device.CUDARuntimeError("cudaErrorStreamCaptureInvalidated",
                                           "operation failed due to a previous error during capture")
        return _graph.Graph._of(capture.ops)

    def is_capturing(self) -> bool:
        capture = _device.CAPTURES.get(self.ptr)
        if capture is not None and capture.invalidated:
            raise RuntimeError("the stream was capturing, but an error has invalidated the "
                               "capture sequence")
        return capture is not None


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)


def get_current_stream(device_id: int = -1) -> Stream:
    """The stream work goes to in this thread (Stream.null unless one was made current)."""
    current = _device.STATE.current
    return Stream.null if current is None else current
