"""Pickling with large arrays in shared memory: how a call and its result cross to a worker.

``pack(obj, region)`` pickles obj, except that every NumPy array of numbers is copied
into ``region`` (a byte array over a shared mapping both processes see) and named in
the pickle by (offset, shape, dtype). ``unpack`` reverses it, giving copies of those
arrays or views into the region. Both sides of a worker use one region for calls and
another for results, so neither overwrites what the other still reads. Since no
number of an array is in the pickle, objects that differ only in their arrays' values
pack to the same bytes (workers.py reuses what it unpickled then).
"""
from __future__ import annotations

import copyreg
import io
import mmap
import pickle
import threading
from typing import Any

import numpy as np

_ALIGN = 64  # each array in a region starts on a cache line


class TooLarge(Exception):
    """The arrays of a call need ``needed`` bytes, more than the region has."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


def halves(arena: mmap.mmap) -> tuple[np.ndarray, np.ndarray]:
    """A shared mapping as two byte arrays: calls (the caller writes) and results (the worker writes)."""
    whole = np.frombuffer(arena, np.uint8)
    half = len(whole) // 2
    return whole[:half], whole[half:]


def pack(obj: Any, region: np.ndarray) -> tuple[bytes, int]:
    """(``obj`` pickled, the bytes of ``region`` its arrays of numbers took).
    Raises TooLarge when they do not fit."""
    buffer = io.BytesIO()
    packer = _Packer(buffer, region)
    packer.dump(obj)
    if packer.used > len(region):
        raise TooLarge(packer.used)
    return buffer.getvalue(), packer.used


class _Packer(pickle.Pickler):
    """A pickler that puts large arrays in the region, through a dispatch table (looked
    up in C per object type, where a persistent_id method is a Python call per object)."""

    def __init__(self, file: io.BytesIO, region: np.ndarray) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.region, self.used = region, 0
        self.dispatch_table = {**copyreg.dispatch_table, np.ndarray: self._reduce_array}

    def _reduce_array(self, array: np.ndarray) -> Any:
        if array.dtype.hasobject:
            return array.__reduce__()
        start = -(-self.used // _ALIGN) * _ALIGN
        self.used = start + array.nbytes
        if self.used <= len(self.region):
            np.copyto(np.ndarray(array.shape, array.dtype, self.region, start), array)
        return _from_region, (start, array.shape, array.dtype)


_loading = threading.local()  # region, copy: where _from_region reads while unpack runs


def unpack(message: bytes, region: np.ndarray, copy: bool) -> Any:
    """What pack packed into ``message`` and ``region``; its large arrays are copies of
    the region's (``copy``) or views into it."""
    _loading.region, _loading.copy = region, copy
    try:
        return pickle.loads(message)
    finally:
        _loading.region = None


def _from_region(start: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    array = np.ndarray(shape, dtype, _loading.region, start)
    return array.copy() if _loading.copy else array
