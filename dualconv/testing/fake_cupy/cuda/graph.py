"""cupy.cuda.graph for the emulated device: a captured stream, replayed by ``launch``."""
from typing import Any as _Any, Callable as _Callable

from .. import _counters, _device

__all__ = ["Graph"]


class Graph:
    """cupy.cuda.Graph: made by Stream.end_capture, never by the user.

    ``launch`` re-runs the captured work in order, into the memory it was captured
    with and with the scalars it was captured with, and counts one graph_launches
    (none of its kernels count as kernel_launches or copy_bytes)."""

    def __init__(self, *args: _Any, **kwargs: _Any) -> None:
        raise NotImplementedError("currently this class cannot be initiated by the user and must "
                                  "be created via stream capture")

    @classmethod
    def _of(cls, ops: list[_Callable[[], _Any]]) -> "Graph":
        graph = cls.__new__(cls)
        graph._ops = tuple(ops)
        return graph

    def launch(self, stream: _Any = None) -> None:
        """Run the graph on ``stream`` (default: the current stream).

        Launched into a stream that is capturing, it becomes part of that capture."""
        capture = _device.recording() if stream is None else _device.CAPTURES.get(stream.ptr)
        if capture is not None:
            capture.ops.extend(self._ops)
            return
        _counters.COUNTERS["graph_launches"] += 1
        _device.replay(list(self._ops))

    def upload(self, stream: _Any = None) -> None:
        """Make the graph resident on the device ahead of its first launch (nothing to do here)."""
