"""The list updates (kernels/optimizers.cu: sgd_update_many, adam_update_many and their
guarded forms), run on the emulated CuPy: every parameter of a model in one launch, with
the arrays' addresses passed by value in a DcTensorList.

The oracle is the one-array CPU twin (cpu_fused.sgd_update, ...) applied to each array
in turn: the list kernels make the same operations per element, so the results are the
same bits. Launch counts follow the grouping rule: one launch per dtype and per 32 arrays.
"""
from __future__ import annotations

import numpy as np
import pytest

from dualconv import kernels
from dualconv.divergence import NO_FAILURE
from dualconv.kernels import cpu_fused as cpu
from dualconv.kernels import cuda_many
from dualconv.testing import emulated_cupy
from kernel_cases import DTYPES, assert_bitwise_equal

pytestmark = [pytest.mark.cuda_emulated,
              pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")]

MANY_UNDER_TEST = ("sgd_update_many", "adam_update_many", "sgd_update_guarded_many",
                   "adam_update_guarded_many")

SHAPES = [(6, 1, 5, 5), (6,), (0,), (16, 6, 5, 5), (16,), (256, 120), (120,), (1,), (84, 10)]
"""A LeNet's parameters and two edge cases: an empty array and a one-element one."""

CODE = 6  # the guard's code of step 3
SGD = {"plain": (0.05, 0.0, 0.0, False), "momentum": (0.05, 0.9, 0.0, False),
       "nesterov, decay": (0.05, 0.9, 0.01, True)}  # lr, momentum, weight_decay, nesterov
ADAM = (1e-3, 0.9, 0.999, 1e-8, 0.01, 3)  # lr, b1, b2, eps, weight_decay, step


def _arrays(rng: np.random.Generator, roles: int, dtypes, shapes=SHAPES) -> list[list[np.ndarray]]:
    """``roles`` lists of arrays, one per shape; second moments (Adam's v) stay positive."""
    made = [[(rng.standard_normal(s) * 0.5).astype(d) for s, d in zip(shapes, dtypes)]
            for _ in range(roles)]
    return made


def _run(kernel: str, roles: list[list[np.ndarray]], rest: tuple, transpose_g: bool = False):
    """kernel on the emulated CuPy with roles (None kept) -> (roles after, counters)."""
    with emulated_cupy() as emu:
        cp = emu.cupy
        device = [None if r is None else [cp.asarray(a) for a in r] for r in roles]
        if transpose_g:  # a gradient read through its strides: copied C-contiguous first
            device[1] = [cp.ascontiguousarray(g.T).T for g in device[1]]
        emu.reset_counters()
        getattr(kernels, kernel)(*(None if r is None else tuple(r) for r in device), *rest)
        counters = dict(emu.counters)
        return [None if r is None else [cp.asnumpy(a) for a in r] for r in device], counters


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("settings", SGD.values(), ids=SGD.keys())
def test_sgd_update_many_is_sgd_update_on_each_array_in_one_launch(dtype, settings):
    w, g, v = _arrays(np.random.default_rng(0), 3, [dtype] * len(SHAPES))
    v = v if settings[1] else None
    expected_w, expected_v = [a.copy() for a in w], None if v is None else [a.copy() for a in v]
    for k in range(len(w)):
        cpu.sgd_update(expected_w[k], g[k], None if v is None else expected_v[k], *settings)
    (got_w, _, got_v), counters = _run("sgd_update_many", [w, g, v], settings, transpose_g=True)
    for k in range(len(w)):
        assert_bitwise_equal(got_w[k], expected_w[k], f"w[{k}]")
        if v is not None:
            assert_bitwise_equal(got_v[k], expected_v[k], f"v[{k}]")
    assert counters["kernel_launches"] == 1 + sum(len(s) > 1 for s in SHAPES)  # + the layouts
    assert counters["host_to_device"] == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_adam_update_many_is_adam_update_on_each_array(dtype):
    w, g, m, v = _arrays(np.random.default_rng(1), 4, [dtype] * len(SHAPES))
    v = [np.abs(a) for a in v]
    expected = [[a.copy() for a in role] for role in (w, m, v)]
    for k in range(len(w)):
        cpu.adam_update(expected[0][k], g[k], expected[1][k], expected[2][k], *ADAM)
    (got_w, _, got_m, got_v), counters = _run("adam_update_many", [w, g, m, v], ADAM)
    for name, got, want in zip("wmv", (got_w, got_m, got_v), expected):
        for k in range(len(w)):
            assert_bitwise_equal(got[k], want[k], f"{name}[{k}]")
    assert counters["kernel_launches"] == 1


VERDICTS = {"no failure": NO_FAILURE, "an earlier step failed": CODE - 1,
            "this step's loss failed": CODE}


@pytest.mark.parametrize("verdict", VERDICTS.values(), ids=VERDICTS.keys())
@pytest.mark.parametrize("bad_gradient", [False, True], ids=["finite", "non-finite"])
@pytest.mark.parametrize("kernel", ["sgd_update_guarded_many", "adam_update_guarded_many"])
def test_guarded_many_updates_all_or_nothing_and_flags_a_failure(kernel, verdict, bad_gradient):
    """Verdict above the code: each array as its one-array guarded twin (a non-finite result
    in one array flags code + 1 and the others still update); at or below it: nothing."""
    sgd = kernel.startswith("sgd")
    live_roles = 2 if sgd else 3
    rng = np.random.default_rng(2)
    w, g, *state = _arrays(rng, 1 + 1 + (live_roles - 1), [np.float32] * len(SHAPES))
    if not sgd:
        state[1] = [np.abs(a) for a in state[1]]
    if bad_gradient:
        g[3][0, 0, 0, 0] = np.nan
    lasts = [[np.full_like(a, -7.0) for a in w] for _ in range(live_roles)]
    rest_numbers = SGD["momentum"] if sgd else ADAM
    cpu_state = [[a.copy() for a in role] for role in [w, *state, *lasts]]
    cpu_flag = np.array([verdict], np.int32)
    one = cpu.sgd_update_guarded if sgd else cpu.adam_update_guarded
    for k in range(len(w)):
        live = [cpu_state[r][k] for r in range(live_roles)]
        last = [cpu_state[live_roles + r][k] for r in range(live_roles)]
        one(live[0], g[k], *live[1:], *last, cpu_flag, CODE, *rest_numbers)
    flag = np.array([verdict], np.int32)
    with emulated_cupy() as emu:
        cp = emu.cupy
        device = [[cp.asarray(a) for a in role] for role in [w, *state, *lasts]]
        device_flag = cp.asarray(flag)
        emu.reset_counters()
        getattr(kernels, kernel)(tuple(device[0]), tuple(cp.asarray(a) for a in g),
                                 *(tuple(role) for role in device[1:]), device_flag, CODE,
                                 *rest_numbers)
        assert emu.counters["kernel_launches"] == 1
        got = [[cp.asnumpy(a) for a in role] for role in device]
        got_flag = int(cp.asnumpy(device_flag)[0])
    for r, (ours, theirs) in enumerate(zip(got, cpu_state)):
        for k in range(len(w)):
            assert_bitwise_equal(ours[k], theirs[k], f"role {r}, array {k}")
    assert got_flag == cpu_flag[0]
    if verdict <= CODE:
        assert all(np.all(a == -7.0) for a in got[live_roles])  # nothing saved, nothing changed
    else:
        assert got_flag == (CODE + 1 if bad_gradient else NO_FAILURE)


def test_one_launch_per_dtype_and_per_32_arrays():
    shapes = [(3,)] * 40 + [(2, 2)] * 3
    dtypes = [np.float32] * 40 + [np.float64] * 3
    w, g = _arrays(np.random.default_rng(3), 2, dtypes, shapes)
    expected = [a.copy() for a in w]
    for k in range(len(w)):
        cpu.sgd_update(expected[k], g[k], None, *SGD["plain"])
    (got, _, _), counters = _run("sgd_update_many", [w, g, None], SGD["plain"])
    for k in range(len(w)):
        assert_bitwise_equal(got[k], expected[k], f"w[{k}]")
    assert counters["kernel_launches"] == 3  # float32: 32 + 8 arrays; float64: 3
    assert cuda_many.TENSORS == 32


@pytest.mark.parametrize("count", [len(SHAPES), 40], ids=["one group", "two groups"])
def test_later_calls_update_the_arrays_they_are_given(count):
    """A call of a signature seen before updates the arrays it is given, whichever roles
    changed since: the same weights with new gradients, a new velocity, all new arrays,
    then the first ones again; each call updates exactly the arrays it was given."""
    shapes = (SHAPES * 5)[:count]
    rng = np.random.default_rng(5)
    host = [_arrays(rng, 3, [np.float32] * count, shapes) for _ in range(3)]  # (w, g, v) sets
    settings = SGD["momentum"]
    with emulated_cupy() as emu:
        cp = emu.cupy
        device = [[[cp.asarray(a) for a in role] for role in arrays] for arrays in host]
        expected = [[[a.copy() for a in role] for role in arrays] for arrays in host]
        for w_set, g_set, v_set in [(0, 0, 0), (0, 1, 0), (0, 2, 1), (1, 1, 1), (2, 0, 2), (0, 1, 0)]:
            kernels.sgd_update_many(tuple(device[w_set][0]), tuple(device[g_set][1]),
                                    tuple(device[v_set][2]), *settings)
            for k in range(count):
                cpu.sgd_update(expected[w_set][0][k], host[g_set][1][k], expected[v_set][2][k], *settings)
            for s in range(3):
                for role in (0, 2):
                    for k in range(count):
                        assert_bitwise_equal(cp.asnumpy(device[s][role][k]), expected[s][role][k],
                                             f"set {s}, role {role}, array {k}")


def test_a_list_update_keeps_no_array_alive():
    """A list update holds none of its arrays after the call (nor would any memory of
    their addresses): dropped weights, optimizer state and gradients are freed."""
    import gc
    import weakref
    with emulated_cupy() as emu:
        cp = emu.cupy
        w, g, v = ([cp.zeros(s, np.float32) for s in SHAPES] for _ in range(3))
        for _ in range(2):
            kernels.sgd_update_many(tuple(w), tuple(g), tuple(v), *SGD["momentum"])
        references = [weakref.ref(a) for a in (*w, *g, *v)]
        del w, g, v
        gc.collect()
        assert sum(r() is not None for r in references) == 0


def test_an_empty_list_launches_nothing():
    _, counters = _run("sgd_update_many", [[], [], None], SGD["plain"])
    assert counters["kernel_launches"] == 0


def test_many_updates_refuse_a_weight_they_cannot_update_in_place():
    with emulated_cupy() as emu:
        cp = emu.cupy
        w = cp.zeros((4, 3), np.float32).T
        with pytest.raises(ValueError, match=r"sgd_update_many: ws\[0\] must be C-contiguous"):
            kernels.sgd_update_many((w,), (cp.zeros((3, 4), np.float32),), None, *SGD["plain"])


def test_a_weight_listed_twice_is_updated_twice_in_turn():
    """A weight tied between two layers is listed twice: one launch would have two threads
    update it at once, so each parameter gets a launch of its own, in order."""
    w, g1, g2 = _arrays(np.random.default_rng(4), 3, [np.float32], [(5, 3)])
    w, g1, g2 = w[0], g1[0], g2[0]
    expected = w.copy()
    cpu.sgd_update(expected, g1, None, *SGD["plain"])
    cpu.sgd_update(expected, g2, None, *SGD["plain"])
    with emulated_cupy() as emu:
        cp = emu.cupy
        tied = cp.asarray(w)
        emu.reset_counters()
        kernels.sgd_update_many((tied, tied), (cp.asarray(g1), cp.asarray(g2)), None, *SGD["plain"])
        assert emu.counters["kernel_launches"] == 2
        assert_bitwise_equal(cp.asnumpy(tied), expected, "tied w")


def test_many_checks_refuse_arrays_of_two_backends():
    with emulated_cupy() as emu:
        cp = emu.cupy
        with pytest.raises(TypeError, match=r"ws\[1\] is a numpy.ndarray but ws\[0\] is a .*one "
                                            r"call updates arrays of one backend"):
            kernels.sgd_update_many((cp.zeros(3, np.float32), np.zeros(3, np.float32)),
                                    (cp.zeros(3, np.float32), np.zeros(3, np.float32)), None,
                                    *SGD["plain"])


@pytest.mark.parametrize("kernel, missing", [("adam_update_many", 2), ("sgd_update_guarded_many", 3),
                                              ("adam_update_guarded_many", 5)])
def test_many_checks_refuse_a_missing_role_the_kernel_reads(kernel, missing):
    """Only SGD's velocities (and their last-good copies) may be None: any other missing
    role would leave a null address in the kernel's list."""
    roles = 4 if kernel == "adam_update_many" else 5 if kernel.startswith("sgd") else 7
    args = [tuple(np.zeros(3, np.float32) for _ in range(2)) for _ in range(roles)]
    args[missing] = None
    rest = (ADAM if kernel.startswith("adam") else SGD["momentum"])
    if "guarded" in kernel:
        rest = (np.array([NO_FAILURE], np.int32), CODE, *rest)
    with pytest.raises(TypeError, match=rf"{kernel}: \w+ must be a tuple of arrays"):
        getattr(kernels, kernel)(*args, *rest)


@pytest.mark.parametrize("args, error, pattern", [
    (((np.zeros(3),), (np.zeros(3), np.zeros(3)), None), ValueError, r"gs holds 2 arrays but ws holds 1"),
    (((np.zeros(3),), (np.zeros(4),), None), ValueError, r"sgd_update_many: parameter 0: .*shape"),
    ((np.zeros(3), np.zeros(3), None), TypeError, r"ws must be a tuple of arrays"),
    (([np.zeros(3)], [np.zeros(3)], None), TypeError, r"ws must be a tuple of arrays, one per parameter, got list"),
    ((None, None, None), TypeError, r"ws must be a tuple of arrays"),
    (((np.zeros(3),), (np.zeros(3),), None, 0.1, 0.9), ValueError, r"momentum needs velocity arrays"),
])
def test_many_checks_name_the_role_and_the_parameter(args, error, pattern):
    numbers = (0.1, 0.0, 0.0, False)
    full = args + numbers[len(args) - 3:]
    with pytest.raises(error, match=pattern):
        kernels.sgd_update_many(*full)


def test_an_array_born_with_a_dead_arrays_id_is_read_afresh():
    """A new array that CPython gives a dead one's id is updated at its own address (a
    memory of addresses by id would have to forget them when an array dies). Each weight
    here is a new view of another stretch of one buffer (ids reused, addresses not): a
    stale address would update the stretch before it."""
    size, times = 3, 12
    rng = np.random.default_rng(8)
    start = rng.standard_normal(size * times).astype(np.float32)
    g_host, v_host = (rng.standard_normal(size).astype(np.float32) for _ in range(2))
    expected = start.copy()
    ids = set()
    with emulated_cupy() as emu:
        cp = emu.cupy
        buffer, g = cp.asarray(start), cp.asarray(g_host)
        for k in range(times):
            w, v = buffer[k * size:(k + 1) * size], cp.asarray(v_host)
            ids.add(id(w))
            kernels.sgd_update_many((w,), (g,), (v,), *SGD["momentum"])
            cpu.sgd_update(expected[k * size:(k + 1) * size], g_host, v_host.copy(), *SGD["momentum"])
            del w, v
        assert_bitwise_equal(cp.asnumpy(buffer), expected, "every stretch updated once")
    assert len(ids) < times  # ids were reused: the case under test happened


def test_each_call_updates_with_its_own_numbers():
    """Each call updates with its own rate (a memory of converted numbers would have to
    hold to the very same, immutable objects): a new rate (a schedule's), a rate held in
    a 0-d array changed in place, and then the first rate again."""
    rng = np.random.default_rng(9)
    (w_host,), (g_host,), (v_host,) = _arrays(rng, 3, [np.float32], [(7,)])
    held = np.array(0.5)
    rates = [0.1, 0.1, 0.25, held, held, 0.1]
    expected_w, expected_v = w_host.copy(), v_host.copy()
    with emulated_cupy() as emu:
        cp = emu.cupy
        w, g, v = cp.asarray(w_host), cp.asarray(g_host), cp.asarray(v_host)
        for k, lr in enumerate(rates):
            if k == 4:
                held[...] = 0.125
            kernels.sgd_update_many((w,), (g,), (v,), lr, 0.9, 0.0, False)
            cpu.sgd_update(expected_w, g_host, expected_v, float(lr), 0.9, 0.0, False)
            assert_bitwise_equal(cp.asnumpy(w), expected_w, f"call {k}")
