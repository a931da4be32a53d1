"""The guarded SGD update through the compiled kernels (kernels/cpu_optimizers.c, loaded by
native.py): the fast path of cpu_fused.py's sgd_update_guarded_many, with the same bits
(each operation rounded as written, in the same order, no fused multiply-add).

One call per parameter, each one pass over its numbers where the NumPy twin makes about
ten: the copies into the last-good arrays, the update's operations, the finiteness check.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .native import library

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def sgd_update_guarded_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray],
                            vs: Sequence[np.ndarray] | None, w_lasts: Sequence[np.ndarray],
                            v_lasts: Sequence[np.ndarray] | None, verdict: np.ndarray, code: int,
                            lr: float, momentum: float, weight_decay: float, nesterov: bool) -> bool:
    """cpu_fused.sgd_update_guarded_many's work (the same arguments, the same rule: each
    parameter updated unless verdict[0] <= code, a non-finite result setting it to
    code + 1); True where done, False where the compiled kernel does not apply (no
    library, a dtype other than float32 and float64, mixed dtypes, an array that is not
    C-contiguous), and nothing was changed."""
    lib = library()
    if lib is None or not ws:
        return False
    dtype = ws[0].dtype
    arrays = [*ws, *gs, *w_lasts, *(vs or ()), *(v_lasts or ())]
    if dtype not in _SUFFIX or any(a.dtype != dtype or not a.flags.c_contiguous for a in arrays):
        return False
    update = getattr(lib, f"sgd_update_guarded_{_SUFFIX[dtype]}")
    t = dtype.type
    numbers = (t(lr), t(momentum), t(weight_decay), int(bool(weight_decay)), int(momentum != 0.0),
               int(bool(nesterov)))
    for k, w in enumerate(ws):
        if verdict[0] <= code:
            continue
        v, v_last = (None, None) if vs is None else (vs[k].ctypes.data, v_lasts[k].ctypes.data)
        if not update(w.ctypes.data, gs[k].ctypes.data, v, w_lasts[k].ctypes.data, v_last, w.size, *numbers):
            verdict[0] = code + 1
    return True
