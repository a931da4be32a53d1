"""How the emulated device runs work: eagerly, or recorded into a CUDA graph.

Every device operation of the stand-in goes through ``launch`` (it writes into
arrays that exist: in-place ufuncs, setitem, fill, copyto, RawKernel calls) or
``new`` (it makes a new array: out-of-place ufuncs, reductions, copies). While
the current stream captures (cupy.cuda.Stream.begin_capture), neither executes:
``launch`` records its work, and ``new`` computes once only to learn the shape
and dtype of its result, then hands back a fresh buffer full of 0xFF bytes (NaN
in a float) and records the work that fills it. ``Graph.launch`` replays the
record in order into the same memory with the recorded scalars.

A record holds the memory it writes, not the arrays: as on a GPU, a graph keeps
nothing alive, so a buffer freed after the capture and handed to another array
by its pool (see cuda/memory.py) is overwritten by the next replay.

Host transfers and host reads during a capture raise RuntimeError with CuPy's
messages (memory.pyx), synchronizations raise CUDARuntimeError, and cuBLAS calls
(matmul, dot on floats) raise NotImplementedError, as CuPy 14's cublas.setStream
does while the stream captures.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from . import _counters

POISON = 0xFF
"""The byte that fills memory allocated during a capture (a NaN in every float dtype)."""


class CUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError: a CUDA call failed."""

    def __init__(self, name: str, description: str) -> None:
        self.status = name
        super().__init__(f"{name}: {description}")


class Capture:
    """The record of one stream's capture: ops in issue order, and its mode."""

    def __init__(self, stream: Any, mode: int) -> None:
        self.stream, self.mode = stream, mode
        self.ops: list[Callable[[], Any]] = []
        self.invalidated = False


class _State(threading.local):
    def __init__(self) -> None:
        self.current: Any = None  # the current stream; None is the legacy null stream
        self.stack: list[Any] = []
        self.allocator: Any = None  # None: the default pool (bypassed unless REUSE)


STATE = _State()
CAPTURES: dict[int, Capture] = {}
"""The captures under way, by stream pointer."""
REUSE = [False]
"""True while every allocation goes through the current allocator (emulated_cupy(reuse_memory=True))."""
DEFAULT_ALLOCATOR: list[Any] = [None]
"""The default pool's malloc (set by cuda/memory.py)."""


def save() -> tuple[Any, ...]:
    """The captures under way and this thread's stream and allocator, for ``restore``."""
    return dict(CAPTURES), STATE.current, list(STATE.stack), STATE.allocator


def restore(saved: tuple[Any, ...]) -> None:
    """Back to what ``save`` gave: a capture left open, or a stream or allocator left
    current, inside an emulated_cupy block does not outlive it."""
    captures, STATE.current, STATE.stack, STATE.allocator = saved
    CAPTURES.clear()
    CAPTURES.update(captures)


def current_ptr() -> int:
    stream = STATE.current
    return 0 if stream is None else stream.ptr


def recording() -> Capture | None:
    """The capture that the current stream feeds, or None when work runs now.

    Work on the legacy null stream while a blocking stream captures would wait for
    that stream: CUDA refuses it and invalidates the capture."""
    if not CAPTURES:
        return None
    ptr = current_ptr()
    capture = CAPTURES.get(ptr)
    if capture is None and ptr == 0:
        blocking = [c for c in CAPTURES.values() if not c.stream._non_blocking]
        if blocking:
            for c in blocking:
                c.invalidated = True
            raise CUDARuntimeError("cudaErrorStreamCaptureImplicit",
                                   "operation would make the legacy stream depend on a capturing "
                                   "blocking stream")
    return capture


def check_transfer(direction: str) -> None:
    """Raise as CuPy's MemoryPointer.copy_*_async does when the current stream captures."""
    if recording() is not None:
        raise RuntimeError(f"the current stream is capturing, so {direction} transfers are disallowed")


def to_device() -> None:
    check_transfer("H2D")
    _counters.to_device()


def to_host() -> None:
    check_transfer("D2H")
    _counters.to_host()


def synchronize(stream: Any = None) -> None:
    """A wait for the device (stream=None: the whole device); refused during a capture."""
    captures = list(CAPTURES.values()) if stream is None else \
        [c for c in (CAPTURES.get(stream.ptr),) if c is not None]
    if captures:
        for c in captures:
            c.invalidated = True
        raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported",
                               "operation not permitted when stream is capturing")
    _counters.sync()


def refuse_cublas() -> None:
    """cuBLAS refuses to run during a capture in CuPy 14 (cublas.pyx, setStream)."""
    if recording() is not None:
        raise NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")


# -- memory ---------------------------------------------------------------------------

def managed() -> bool:
    """Whether new arrays must come from an allocator (else a plain NumPy array will do)."""
    return REUSE[0] or STATE.allocator is not None or bool(CAPTURES)


def allocator() -> Callable[[int], Any]:
    return STATE.allocator if STATE.allocator is not None else DEFAULT_ALLOCATOR[0]


def allocate(shape: Any, dtype: Any, like: np.ndarray | None = None, order: str = "C") -> np.ndarray:
    """Uninitialized device memory for an array: C- or F-contiguous (``order``), or laid out
    as ``like`` (CuPy's order K).

    Outside a capture and with the default allocator (no reuse), a NumPy array;
    otherwise memory from the current allocator, poisoned during a capture."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)
    axes = list(range(len(shape)))[::-1 if order == "F" else 1]
    if like is not None and like.ndim == len(shape) and not like.flags.c_contiguous:
        axes = sorted(axes, key=lambda i: -abs(like.strides[i]))
    stored = tuple(shape[i] for i in axes)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not managed() or nbytes == 0:
        out = np.empty(stored, dtype)
    else:
        memory = np.asarray(allocator()(nbytes))
        out = np.ndarray(stored, dtype, buffer=memory)
        if recording() is not None:
            memory[:nbytes] = POISON
    return out.transpose(np.argsort(axes)) if axes != sorted(axes) else out


def unowned(x: Any) -> Any:
    """``x`` (an array, or a tuple/list of them, or a scalar) seen through memory that it
    does not keep alive: what a graph holds."""
    if isinstance(x, np.ndarray):
        root = x.base
        while isinstance(root, np.ndarray):
            root = root.base
        raw = getattr(root, "_raw", None)
        if raw is None:
            return x
        offset = x.__array_interface__["data"][0] - raw.__array_interface__["data"][0]
        return np.ndarray(x.shape, x.dtype, buffer=raw, offset=offset, strides=x.strides)
    if isinstance(x, (tuple, list)):
        return type(x)(unowned(i) for i in x)
    if isinstance(x, dict):
        return {k: unowned(v) for k, v in x.items()}
    return x


# -- work -----------------------------------------------------------------------------

def _count(launches: int, copied_bytes: int) -> None:
    _counters.launch(copied_bytes)
    for _ in range(launches - 1):
        _counters.launch()


def launch(fn: Callable[..., Any], *args: Any, copied_bytes: int = 0, launches: int = 1,
           **kwargs: Any) -> None:
    """``launches`` kernels (one by default) that write into existing arrays:
    ``fn(*args, **kwargs)`` now, or recorded."""
    capture = recording()
    if capture is None:
        _count(launches, copied_bytes)
        with np.errstate(all="ignore"):  # a GPU neither warns nor raises on overflow or 0/0
            fn(*args, **kwargs)
        return
    args, kwargs = unowned(args), unowned(kwargs)
    capture.ops.append(lambda: fn(*args, **kwargs))


def new(fn: Callable[..., Any], *args: Any, keep_layout: bool = False, copies: bool = False,
        launches: int = 1, copied_bytes: int = 0, probe: Callable[..., Any] | None = None,
        **kwargs: Any) -> np.ndarray:
    """The memory of a new array holding ``fn(*args, **kwargs)`` (``launches`` kernels,
    which copy ``copied_bytes``).

    The result is C-contiguous, as CuPy allocates it, unless ``keep_layout`` (order K:
    laid out as NumPy's result). ``copies``: the kernel is a device copy of the result.
    ``probe``: what gives the result's shape and dtype during a capture, when ``fn``
    cannot run on memory not computed yet (a gather through indices)."""
    capture = recording()
    with np.errstate(all="ignore"):
        result = np.asarray((probe if capture is not None and probe else fn)(*args, **kwargs))
    if capture is None:
        _count(launches, result.nbytes if copies else copied_bytes)
        if not managed():
            return result if keep_layout or result.flags.c_contiguous else np.ascontiguousarray(result)
        out = allocate(result.shape, result.dtype, like=result if keep_layout else None)
        np.copyto(out, result, casting="unsafe")
        return out
    out = allocate(result.shape, result.dtype, like=result if keep_layout else None)
    target, args, kwargs = unowned(out), unowned(args), unowned(kwargs)
    capture.ops.append(lambda: np.copyto(target, fn(*args, **kwargs), casting="unsafe"))
    return out


def replay(ops: list[Callable[[], Any]]) -> None:
    """Run a graph's record: its work, in order, counted as nothing but the graph launch."""
    with np.errstate(all="ignore"):
        for op in ops:
            op()
