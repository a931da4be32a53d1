"""The SGD update through the compiled kernels (kernels/cpu_optimizers.c, loaded by
native.py): the fast path of cpu_fused.py's sgd_update_many and sgd_update_guarded_many,
with the same bits (each operation rounded as written, in the same order, no fused
multiply-add).

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
    return _update(ws, gs, vs, w_lasts, v_lasts, verdict, code, lr, momentum, weight_decay, nesterov)


def sgd_update_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray], vs: Sequence[np.ndarray] | None,
                    lr: float, momentum: float, weight_decay: float, nesterov: bool) -> bool:
    """cpu_fused.sgd_update_many's work (no guard: no copies, no verdict); True where done,
    False where the compiled kernel does not apply, as sgd_update_guarded_many."""
    return _update(ws, gs, vs, None, None, None, 0, lr, momentum, weight_decay, nesterov)


def _update(ws, gs, vs, w_lasts, v_lasts, verdict, code, lr, momentum, weight_decay, nesterov) -> bool:
    lib = library()
    if lib is None or not ws:
        return False
    dtype = ws[0].dtype
    arrays = [*ws, *gs, *(w_lasts or ()), *(vs or ()), *(v_lasts or ())]
    if dtype not in _SUFFIX or any(a.dtype != dtype or not a.flags.c_contiguous for a in arrays):
        return False
    update = getattr(lib, f"sgd_update_guarded_{_SUFFIX[dtype]}")
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
