"""The compiled guarded SGD update (kernels/cpu_optimizers.c through
dualconv/kernels/native_optim.py): the NumPy twin's bits, its verdict and its last-good
copies, for every form of the update; and the NumPy twin where it does not apply."""
from __future__ import annotations

import numpy as np
import pytest

from dualconv.kernels import cpu_fused, native, native_optim


@pytest.fixture(autouse=True)
def compiled(monkeypatch):
    monkeypatch.delenv(native.SWITCH, raising=False)
    if native.library() is None:
        pytest.skip("no C compiler here: the compiled kernels cannot be built")


def state(dtype, seed: int, with_velocity: bool, awkward: bool = False):
    """Parameters of a few sizes (one of them empty), their gradients, velocities and
    last-good arrays; with ``awkward``, NaN, inf, -0.0 and subnormals among them."""
    rng = np.random.default_rng(seed)
    sizes = [(3, 5), (7,), (0,), (40, 33)]
    ws = tuple(rng.standard_normal(s).astype(dtype) for s in sizes)
    gs = tuple(rng.standard_normal(s).astype(dtype) for s in sizes)
    vs = tuple(rng.standard_normal(s).astype(dtype) for s in sizes) if with_velocity else None
    if awkward:
        tiny = np.finfo(dtype).smallest_subnormal
        for g in gs:
            g.flat[::7] = -0.0
            g.flat[3::11] = tiny
        gs[3].flat[5] = np.inf
        ws[3].flat[9] = np.nan
    lasts = tuple(np.zeros(s, dtype) for s in sizes)
    v_lasts = tuple(np.zeros(s, dtype) for s in sizes) if with_velocity else None
    return ws, gs, vs, lasts, v_lasts


def copies(arrays):
    return None if arrays is None else tuple(a.copy() for a in arrays)


def bits(arrays):
    return [] if arrays is None else [a.view(np.uint8).tobytes() for a in arrays]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.0, True)])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-4, 1e-50])
@pytest.mark.parametrize("awkward", [False, True])
def test_the_numpy_twins_bits(dtype, momentum, nesterov, weight_decay, awkward) -> None:
    """Every form (momentum or not, Nesterov or not, decay or not, a decay that rounds to 0
    in the dtype but is not 0), with NaN, inf, -0.0 and subnormals: the same w, v, lasts and
    verdict as the NumPy twin. Momentum 0 with velocities given keeps them unchanged."""
    results = []
    for compiled_path in (False, True):
        ws, gs, vs, lasts, v_lasts = state(dtype, 1, with_velocity=momentum != 0.0 or nesterov, awkward=awkward)
        verdict = np.array([100], np.int32)
        args = (ws, gs, vs, lasts, v_lasts, verdict, 10, 0.05, momentum, weight_decay, nesterov)
        if compiled_path:
            assert native_optim.sgd_update_guarded_many(*args)
        else:
            for k, w in enumerate(ws):  # the NumPy twin, one parameter at a time
                cpu_fused.sgd_update_guarded(w, gs[k], None if vs is None else vs[k], lasts[k],
                                             None if v_lasts is None else v_lasts[k], verdict, 10,
                                             0.05, momentum, weight_decay, nesterov)
        results.append((bits(ws), bits(vs), bits(lasts), bits(v_lasts), int(verdict[0])))
    assert results[1] == results[0]
    assert results[0][4] == (11 if awkward else 100)  # a NaN weight: the verdict flags it


def test_a_verdict_at_or_under_the_code_changes_nothing() -> None:
    ws, gs, vs, lasts, v_lasts = state(np.float32, 2, with_velocity=True)
    before = bits(ws) + bits(vs) + bits(lasts)
    verdict = np.array([10], np.int32)
    assert native_optim.sgd_update_guarded_many(ws, gs, vs, lasts, v_lasts, verdict, 10, 0.1, 0.9, 0.0, True)
    assert bits(ws) + bits(vs) + bits(lasts) == before and verdict[0] == 10


def test_hand_worked_step() -> None:
    """w = 1, g = 0.5, v = 2, lr 0.5, momentum 0.5, decay 0.25, Nesterov: g' = 0.5 + 0.25 =
    0.75, v = 2 * 0.5 + 0.75 = 1.75, w = 1 - 0.5 * (0.75 + 0.5 * 1.75) = 0.1875."""
    w, g, v = (np.array([x], np.float32) for x in (1.0, 0.5, 2.0))
    w_last, v_last = np.zeros(1, np.float32), np.zeros(1, np.float32)
    verdict = np.array([5], np.int32)
    assert native_optim.sgd_update_guarded_many((w,), (g,), (v,), (w_last,), (v_last,), verdict, 2,
                                                0.5, 0.5, 0.25, True)
    assert (w[0], v[0], w_last[0], v_last[0], verdict[0]) == (0.1875, 1.75, 1.0, 2.0, 5)


@pytest.mark.parametrize("w_last, v_last", [(True, False), (False, True)])
def test_each_copy_is_made_where_its_array_is_given(w_last, v_last) -> None:
    """The C kernel alone: w_last and v_last are each written where given (a case of its own
    since each combination is a loop of its own), and the update is the same either way."""
    f = native.library().sgd_update_guarded_f32
    w, g, v = np.full(5, 1, np.float32), np.full(5, 2, np.float32), np.full(5, 3, np.float32)
    w_copy, v_copy = np.zeros(5, np.float32), np.zeros(5, np.float32)
    finite = f(w.ctypes.data, g.ctypes.data, v.ctypes.data, w_copy.ctypes.data if w_last else None,
               v_copy.ctypes.data if v_last else None, 5, np.float32(0.5), np.float32(0.5), np.float32(0), 0, 1, 0)
    # by hand: v = 3 * 0.5 + 2 = 3.5; w = 1 - 0.5 * 3.5 = -0.75
    assert finite == 1 and (v == 3.5).all() and (w == -0.75).all()
    assert (w_copy == (1 if w_last else 0)).all() and (v_copy == (3 if v_last else 0)).all()


def test_declines_what_it_does_not_take() -> None:
    ws, gs, vs, lasts, v_lasts = state(np.float32, 3, with_velocity=True)
    verdict = np.array([5], np.int32)
    mixed = (ws[0].astype(np.float64),) + ws[1:]
    assert not native_optim.sgd_update_guarded_many(mixed, gs, vs, lasts, v_lasts, verdict, 2, 0.1, 0.9, 0.0, False)
    strided = (np.zeros((4, 6), np.float32)[:, ::2],) + ws[1:]
    assert not native_optim.sgd_update_guarded_many(strided, gs, vs, lasts, v_lasts, verdict, 2, 0.1, 0.9, 0.0, False)
    halves = tuple(w.astype(np.float16) for w in ws)
    assert not native_optim.sgd_update_guarded_many(halves, gs, vs, lasts, v_lasts, verdict, 2, 0.1, 0.9, 0.0, False)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_the_unguarded_update_gives_the_numpy_twins_bits(momentum, nesterov) -> None:
    """sgd_update_many (a user's own loop's opt.step()): no copies, the same bits."""
    results = []
    for compiled_path in (False, True):
        ws, gs, vs, _, _ = state(np.float32, 4, with_velocity=momentum != 0.0, awkward=True)
        if compiled_path:
            assert native_optim.sgd_update_many(ws, gs, vs, 0.05, momentum, 5e-4, nesterov)
        else:
            for k, w in enumerate(ws):
                cpu_fused.sgd_update(w, gs[k], None if vs is None else vs[k], 0.05, momentum, 5e-4, nesterov)
        results.append((bits(ws), bits(vs)))
    assert results[1] == results[0]


def test_declines_arrays_it_must_not_write_or_cannot_match() -> None:
    """Read-only parameters (the NumPy twin raises on them), velocities without last-good
    copies, sizes that differ, momentum without velocities: the NumPy twin runs instead."""
    ws, gs, vs, lasts, v_lasts = state(np.float32, 5, with_velocity=True)
    verdict = np.array([5], np.int32)
    frozen = ws[0].copy()
    frozen.setflags(write=False)
    assert not native_optim.sgd_update_many((frozen,) + ws[1:], gs, vs, 0.1, 0.9, 0.0, False)
    assert not native_optim.sgd_update_guarded_many(ws, gs, vs, lasts, None, verdict, 2, 0.1, 0.9, 0.0, False)
    short = (gs[0][:1],) + gs[1:]
    assert not native_optim.sgd_update_many(ws, short, vs, 0.1, 0.9, 0.0, False)
    assert not native_optim.sgd_update_many(ws, gs, None, 0.1, 0.9, 0.0, False)
    with pytest.raises(ValueError, match="read-only"):
        cpu_fused.sgd_update_many((frozen,), (gs[0],), (vs[0],), 0.1, 0.9, 0.0, False)


def test_a_library_whose_update_fuses_is_not_used(monkeypatch) -> None:
    """The load-time check: the real library rounds as written; one marked as fusing
    multiply-adds (a compiler that ignored the build's settings) is left for NumPy."""
    lib = native.library()
    assert native_optim._rounds_as_written(lib)
    monkeypatch.setattr(native_optim, "_rounds_as_written", lambda lib: False)
    ws, gs, vs, _, _ = state(np.float32, 6, with_velocity=True)
    assert not native_optim.sgd_update_many(ws, gs, vs, 0.1, 0.9, 0.0, False)
