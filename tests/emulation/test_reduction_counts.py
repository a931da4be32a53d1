"""Reductions on the emulated CuPy count the launches CuPy 14 makes with CUB on (its
default): cub.pyx, _routines_statistics.pyx. Each expected figure is read off CuPy's
source, case by case, in the comments."""
from __future__ import annotations

import numpy as np
import pytest


CASES = [
    # (what, reduction, expected launches)
    ("C f32 sum: one DeviceReduce", lambda a, cp: a.sum(), 1),
    ("C f32 mean: CUB sum + true_divide", lambda a, cp: a.mean(), 2),
    ("cupy.mean, the same", lambda a, cp: cp.mean(a), 2),
    ("mean over the last axis: segmented sum + divide", lambda a, cp: a.mean(axis=1), 2),
    ("mean over the first axis of a C array: CuPy's own kernel", lambda a, cp: a.mean(axis=0), 1),
    ("mean over axes of a strided view: CuPy's own kernel", lambda a, cp: a[:, ::2].mean(), 1),
    ("max: one DeviceReduce", lambda a, cp: a.max(), 1),
    ("argmax: DeviceReduce + astype(int64)", lambda a, cp: a.argmax(), 2),
    ("argmax over an axis: no CUB path", lambda a, cp: a.argmax(axis=1), 1),
    ("sum into out: DeviceReduce + copy", lambda a, cp: a.sum(out=cp.empty((), cp.float32)), 2),
    ("F-ordered sum: copy to C order + DeviceReduce", lambda a, cp: a.T.sum(), 2),
    ("int32 sum: CUB sums no int32, CuPy's kernel", lambda a, cp: a.astype(cp.int32).sum(), 1 + 1),
    ("int32 mean: CuPy's kernel + astype(float64)", lambda a, cp: a.astype(cp.int32).mean(), 1 + 2),
    ("var: mean (sum, divide, astype) + var kernel", lambda a, cp: a.var(), 4),
    ("std: var + sqrt", lambda a, cp: a.std(), 5),
]


@pytest.mark.parametrize("what, reduce, expected", CASES, ids=[c[0] for c in CASES])
def test_reductions_count_cupys_launches(emu, what, reduce, expected):
    import cupy as cp
    a = cp.asarray(np.arange(20, dtype=np.float32).reshape(4, 5))
    emu.reset_counters()
    result = reduce(a, cp)
    assert emu.counters["kernel_launches"] == expected, what
    np.testing.assert_allclose(cp.asnumpy(result), reduce(np.arange(20, dtype=np.float32).reshape(4, 5),
                                                          np), rtol=1e-6)


def test_an_f_ordered_full_reduction_copies_the_array_once(emu):
    import cupy as cp
    a = cp.asarray(np.ones((8, 16), dtype=np.float32)).T
    emu.reset_counters()
    a.sum()
    assert emu.counters["copy_bytes"] == a.nbytes
