"""The IDX file format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0, 0, type, ndim``, then ``ndim``
big-endian uint32 dimension sizes, then the data in C order (big-endian for
multi-byte types). MNIST images are ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8.
"""
from __future__ import annotations

import numpy as np

# type code -> big-endian dtype
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXFormatError(ValueError):
    """The bytes are not a well-formed IDX file."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array stored in the IDX bytes ``data``, in native byte order.

    For uint8 data (all of MNIST) this is a read-only view of ``data``, no copy.

    ``name`` is only used in error messages.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXFormatError(f"{name}: not an IDX file (bad magic number {data[:4].hex()!r})")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise IDXFormatError(f"{name}: unknown IDX data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{name}: truncated IDX header ({len(data)} bytes, needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IDXFormatError(
            f"{name}: IDX header says shape {shape} ({expected} bytes) but the file has {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)
