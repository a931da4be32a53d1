"""Pickling with large arrays in shared memory: how a call and its result cross to a worker.

``pack(obj, region)`` pickles obj, except that every NumPy array of numbers is copied
into ``region`` (a byte array over a shared mapping both processes see) and named in
the pickle by (offset, shape, dtype). ``unpack`` reverses it, giving copies of those
arrays or views into the region. Both sides of a worker use one region for calls and
another for results, so neither overwrites what the other still reads. Since no
number of an array is in the pickle, objects that differ only in their arrays' values
pack to the same bytes (workers.py reuses what it unpickled then), and ``Packed.refill``
packs such an object again by copying its arrays alone, with no pickling.
"""
from __future__ import annotations

import copyreg
import io
import mmap
import pickle
import struct
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


def pack(obj: Any, region: np.ndarray, placed: list[tuple[np.ndarray, np.ndarray]] | None = None
         ) -> tuple[bytes, int]:
    """(``obj`` pickled, the bytes of ``region`` its arrays of numbers took).
    Raises TooLarge when they do not fit. ``placed``, a list, receives (array, the view of
    the region it was copied into) for each of them, in the order they were packed."""
    buffer = io.BytesIO()
    packer = _Packer(buffer, region, placed)
    packer.dump(obj)
    if packer.used > len(region):
        raise TooLarge(packer.used)
    return buffer.getvalue(), packer.used


class Packed:
    """A pack's message and its arrays' places: an object made of the same objects, whose
    arrays hold other values now, packs to the same message, so ``refill`` copies the
    arrays alone, and the message goes again. (An array in place of one packed must be
    distinct from the others, as the one packed was: pickling packs an object once.)"""

    def __init__(self, message: bytes, used: int, placed: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.message, self.used = message, used
        self.form: Any = None  # what its sender knows of the call packed (resend.py)
        self.arrays: list[np.ndarray | None] = [array for array, _ in placed]  # held: ids stay theirs
        self.views = [view for _, view in placed]

    def refill(self, arrays: list[Any]) -> bool:
        """Copy ``arrays`` (one per array packed, in order) into their places; False, with
        nothing copied, where one differs in shape or dtype from the one packed there."""
        views = self.views
        if len(arrays) != len(views) or not all(
                a.shape == v.shape and a.dtype == v.dtype for a, v in zip(arrays, views)):
            return False
        for array, view in zip(arrays, views):
            np.copyto(view, array)
        return True


class _Packer(pickle.Pickler):
    """A pickler that puts large arrays in the region, through a dispatch table (looked
    up in C per object type, where a persistent_id method is a Python call per object)."""

    def __init__(self, file: io.BytesIO, region: np.ndarray,
                 placed: list[tuple[np.ndarray, np.ndarray]] | None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.region, self.used, self.placed = region, 0, placed
        self.dispatch_table = {**copyreg.dispatch_table, np.ndarray: self._reduce_array}

    def _reduce_array(self, array: np.ndarray) -> Any:
        if array.dtype.hasobject:
            return array.__reduce__()
        start = -(-self.used // _ALIGN) * _ALIGN
        self.used = start + array.nbytes
        if self.used <= len(self.region):
            view = np.ndarray(array.shape, array.dtype, self.region, start)
            np.copyto(view, array)
            if self.placed is not None:
                self.placed.append((array, view))
        return _from_region, (start, array.shape, array.dtype)


class Replies:
    """A worker's side of its answers: ``pack(obj)`` gives the message for obj with its arrays
    in ``region``. An object of a form packed before (form(): the same containers, keys and
    plain values, arrays of the same shapes and dtypes in the same order) has its arrays
    copied into the places they took then and gets that message again, with no pickling:
    unpacked, it gives objects equal to obj, reading obj's values. Keeps up to ``most``
    forms; raises TooLarge as pack does."""

    def __init__(self, region: np.ndarray, most: int) -> None:
        self.region, self.most = region, most
        self.kept: dict[Any, tuple[bytes, list[np.ndarray]]] = {}

    def pack(self, obj: Any) -> bytes:
        shaped = form(obj)
        if shaped is not None:
            known = self.kept.get(shaped[0])
            if known is not None:
                for array, view in zip(shaped[1], known[1]):
                    np.copyto(view, array)
                return known[0]
        placed: list[tuple[np.ndarray, np.ndarray]] = []
        message = pack(obj, self.region, placed)[0]
        if shaped is not None and len(placed) == len(shaped[1]):
            if len(self.kept) >= self.most:
                self.kept.clear()
            self.kept[shaped[0]] = (message, [view for _, view in placed])
        return message


PLAIN = (int, str, bool, bytes, type(None))
"""Types whose equal values pickle to the same bytes (floats do where their bits are equal:
float_bits)."""


def float_bits(value: float) -> bytes:
    """A float's bits: -0.0 and 0.0, and NaNs of either sign, are equal but pickle apart."""
    return struct.pack("<d", value)


class _Unlike(Exception):
    """An object form() does not describe."""


def form(obj: Any) -> tuple[Any, list[np.ndarray]] | None:
    """(key, arrays): obj's form as a hashable key (tuples, lists and dicts with their types,
    keys and plain values, floats by their bits; each NumPy array of numbers as its shape
    and dtype) and its arrays in the order pickling meets them; None for anything else in
    it (another type, whose unpickling may run its own code; an array of records, objects
    or a dtype with metadata; the same array or container twice; nesting too deep)."""
    arrays: list[np.ndarray] = []
    seen: set[int] = set()

    def key(o: Any) -> Any:
        kind = type(o)
        if kind in PLAIN:
            return kind, o
        if kind is float:
            return kind, float_bits(o)
        if id(o) in seen:
            raise _Unlike
        seen.add(id(o))
        if kind is np.ndarray and o.dtype.kind in "biufc" and o.dtype.metadata is None:
            arrays.append(o)
            return o.shape, o.dtype.str  # a number's dtype is its str: kind, size, byte order
        if kind is tuple or kind is list:
            return kind, tuple(map(key, o))
        if kind is dict:
            return kind, tuple((key(k), key(v)) for k, v in o.items())
        raise _Unlike

    try:
        return key(obj), arrays
    except (_Unlike, RecursionError):
        return None


class Answers:
    """A caller's side of a worker's answers in ``region``: ``unpack(message)`` gives the
    objects unpacked before from the same bytes where there are, else unpacks afresh. The
    same bytes name the same objects with their arrays at the same places of the region,
    which now hold this answer's values, so the objects kept serve again (a training step's
    forward and backward answers are the same bytes every step). Kept: up to ``most``
    answers (ok, value, needed) whose arrays are in the region (needed 0), that are not
    exceptions (ok False), and whose value has a form (form(): plain containers, numbers
    and arrays of numbers, nothing whose unpickling runs code of its own). The objects are
    shared by every answer of those bytes: whoever takes one reads it, and changes none of
    it, before the worker's next call."""

    def __init__(self, region: np.ndarray, most: int) -> None:
        self.region, self.most = region, most
        self.kept: dict[bytes, tuple[bool, Any, int]] = {}

    def unpack(self, message: bytes) -> tuple[bool, Any, int]:
        answer = self.kept.get(message)
        if answer is None:
            answer = unpack(message, self.region, copy=False)
            if answer[0] and answer[2] == 0 and form(answer[1]) is not None:
                if len(self.kept) >= self.most:
                    self.kept.clear()
                self.kept[message] = answer
        return answer

    def clear(self) -> None:
        self.kept.clear()


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
