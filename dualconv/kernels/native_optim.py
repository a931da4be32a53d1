"""The SGD update through the compiled kernels (kernels/cpu_optimizers.c, loaded by
native.py): the fast path of cpu_fused.py's sgd_update_many and sgd_update_guarded_many,
with the same bits (each operation rounded as written, in the same order, no fused
multiply-add), but a NaN's sign: where two NaNs meet, which one an operation passes on
follows the compiler's order of its operands. The guard reads only finiteness.

One call per parameter, each one pass over its numbers where the NumPy twin makes about
ten: the copies into the last-good arrays, the update's operations, the finiteness check.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from .native import SUFFIX, library


def sgd_update_guarded_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray],
                            vs: Sequence[np.ndarray] | None, w_lasts: Sequence[np.ndarray],
                            v_lasts: Sequence[np.ndarray] | None, verdict: np.ndarray, code: int,
                            lr: float, momentum: float, weight_decay: float, nesterov: bool) -> bool:
    """cpu_fused.sgd_update_guarded_many's work (the same arguments, the same rule: each
    parameter updated unless verdict[0] <= code, a non-finite result setting it to
    code + 1); True where done, False where the compiled kernel does not apply (no
    library, a dtype other than float32 and float64, mixed dtypes, an array that is not
    C-contiguous), and nothing was changed."""
    return _update(ws, gs, vs, w_lasts, v_lasts, verdict, code, lr, momentum, weight_decay, nesterov)


def sgd_update_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray], vs: Sequence[np.ndarray] | None,
                    lr: float, momentum: float, weight_decay: float, nesterov: bool) -> bool:
    """cpu_fused.sgd_update_many's work (no guard: no copies, no verdict); True where done,
    False where the compiled kernel does not apply, as sgd_update_guarded_many."""
    return _update(ws, gs, vs, None, None, None, 0, lr, momentum, weight_decay, nesterov)


def _update(ws, gs, vs, w_lasts, v_lasts, verdict, code, lr, momentum, weight_decay, nesterov) -> bool:
    lib = library()
    if lib is None or not ws or not _rounds_as_written(lib):
        return False
    dtype = ws[0].dtype
    companions = [arrays for arrays in (gs, vs, w_lasts, v_lasts) if arrays is not None]  # each beside ws
    written = [*ws, *(w_lasts or ()), *(vs or ()), *(v_lasts or ())]
    if (dtype not in SUFFIX or (vs is None and momentum != 0.0)
            or (w_lasts is not None and (vs is None) != (v_lasts is None))
            or any(a.dtype != dtype or not a.flags.c_contiguous for a in [*written, *gs])
            or not all(a.flags.writeable for a in written)
            or any(a.size != w.size for arrays in companions for a, w in zip(arrays, ws))):
        return False  # the NumPy twin runs, and raises where it should
    update = getattr(lib, f"sgd_update_guarded_{SUFFIX[dtype]}")
    t = dtype.type
    numbers = (t(lr), t(momentum), t(weight_decay), int(bool(weight_decay)), int(momentum != 0.0),
               int(bool(nesterov)))
    for k, w in enumerate(ws):
        if verdict is not None and verdict[0] <= code:
            continue
        v = None if vs is None else vs[k].ctypes.data
        w_last = None if w_lasts is None else w_lasts[k].ctypes.data
        v_last = None if v_lasts is None else v_lasts[k].ctypes.data
        finite = update(w.ctypes.data, gs[k].ctypes.data, v, w_last, v_last, w.size, *numbers)
        if verdict is not None and not finite:
            verdict[0] = code + 1
    return True


@functools.cache
def _rounds_as_written(lib) -> bool:
    """Whether this library's update rounds each operation as written, checked once: with
    w = 1, g = 3 and lr = 1/3 in float32, lr * g rounds to 1, so w - lr * g is 0, where a
    fused multiply-add gives -2^-25 (a compiler that fused despite the build's settings)."""
    w, g = np.ones(1, np.float32), np.full(1, 3, np.float32)
    lib.sgd_update_guarded_f32(w.ctypes.data, g.ctypes.data, None, None, None, 1, np.float32(1 / 3),
                               np.float32(0), np.float32(0), 0, 0, 0)
    return bool(w[0] == 0 and not np.signbit(w[0]))
