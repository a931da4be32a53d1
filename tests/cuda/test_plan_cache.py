"""A plan cached per call signature (kernels/plan_cache.py) is the plan: for any shapes,
memory orders, dtypes, windows and per-call numbers, the launch it binds to a call is
the Launch ``plan_<kernel>(...)`` returns for that call, argument by argument (the same
array objects in the same slots, equal outputs, scalars of the same type and value).
A call whose signature differs gets a plan of its own; per-call numbers do not make one.

Plans read only shapes, strides and dtypes, so NumPy arrays stand in for device arrays.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualconv.kernels import cuda_plans
from dualconv.kernels.launch import Input, Launch, Output
from dualconv.kernels.plan_cache import PlanCache, per_call
from dualconv.shapes import Window
from kernel_cases import ARGS, kernel_args
from window_configs import draw_config

LAYOUTS = ("batch-first", "batch-last", "strided")
"""How an image argument lies in memory: C-contiguous (N, C, H, W), a view of a
C-contiguous (C, H, W, N), or every other element of a larger array (laid out by a copy)."""


def _laid(a: np.ndarray, layout: str) -> np.ndarray:
    """``a``'s values in the memory order ``layout`` (for 4-D a; others stay C-contiguous)."""
    if a.ndim != 4 or layout == "batch-first":
        return a
    if layout == "batch-last":
        return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    wide = np.zeros((*a.shape[:3], 2 * a.shape[3]), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def _same_argument(got: Any, want: Any) -> bool:
    if isinstance(want, Input):
        return isinstance(got, Input) and got.array is want.array and got.axes == want.axes
    if isinstance(want, Output):
        return isinstance(got, Output) and got == want
    if isinstance(want, np.generic):
        return type(got) is type(want) and (got == want or (np.isnan(got) and np.isnan(want)))
    return got is want


def assert_same_launch(got: Launch, want: Launch) -> None:
    assert (got.name, got.grid, got.block) == (want.name, want.grid, want.block)
    assert len(got.args) == len(want.args), (got.args, want.args)
    for k, (g, w) in enumerate(zip(got.args, want.args)):
        assert _same_argument(g, w), f"{want.name} argument {k}: {g!r} is not {w!r}"


def _twice(plan: Callable[..., Launch], make: Callable[[int], tuple[Any, ...]]) -> PlanCache:
    """A fresh cache of ``plan``, asked for the launches of make(0) then make(1), which have
    one signature: each equals the plan's, and one entry serves both."""
    cache = PlanCache(plan)
    for seed in (0, 1):
        args = make(seed)
        assert_same_launch(cache.launch(args), plan(*args))
    assert len(cache.entries) == 1
    return cache


@settings(max_examples=60, deadline=None)
@given(kernel=st.sampled_from(sorted(ARGS)), dtype=st.sampled_from([np.float32, np.float64]),
       layout=st.sampled_from(LAYOUTS), data=st.data())
def test_a_cached_window_plan_is_the_plan(kernel, dtype, layout, data):
    case = draw_config(lambda lo, hi: data.draw(st.integers(lo, hi)))
    _twice(cuda_plans.PLANS[kernel],
           lambda seed: tuple(_laid(a, layout) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                              else a for a in kernel_args(kernel, case, dtype, "spread", seed)))


def _arrays(shape: tuple[int, ...], dtype: Any, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


def _verdict() -> np.ndarray:
    return np.array([2**31 - 1], np.int32)


numbers = st.floats(0.0, 0.99, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
       dtype=st.sampled_from([np.float32, np.float64]),
       lr=numbers, b1=numbers, b2=numbers, step=st.integers(1, 1000),
       momentum=numbers, nesterov=st.booleans(), key=st.integers(0, 2**64 - 1),
       p=numbers, first_pair=st.integers(0, 1000))
def test_a_cached_fused_plan_binds_each_calls_numbers(shape, dtype, lr, b1, b2, step, momentum,
                                                      nesterov, key, p, first_pair):
    """The per-call numbers (learning rate, Adam's step, the guard's code, Dropout's key)
    of the second call are its own, not the first call's, and make no plan of their own."""
    code = 2 * step
    makers: dict[str, Callable[[int], tuple[Any, ...]]] = {
        "sgd_update": lambda s: (*_arrays(shape, dtype, 3, s), lr + s, momentum, 0.0, nesterov),
        "adam_update": lambda s: (*_arrays(shape, dtype, 4, s), lr, b1, b2, 1e-8, 0.0, step + s),
        "sgd_update_guarded": lambda s: (*_arrays(shape, dtype, 3, s), *_arrays(shape, dtype, 2, s),
                                         _verdict(), code + 2 * s, lr, momentum, 0.0, nesterov),
        "adam_update_guarded": lambda s: (*_arrays(shape, dtype, 7, s), _verdict(), code + 2 * s,
                                          lr, b1, b2, 1e-8, 0.0, step + s),
        "flag_nonfinite_loss": lambda s: (np.array(np.nan, dtype), _verdict(), code + 2 * s),
        "dropout_forward": lambda s: (_arrays((3, *shape), dtype, 1, s)[0], key ^ s, p,
                                      2 * (first_pair + s)),
        "softmax_cross_entropy": lambda s: (_arrays((4, *shape[:1]), dtype, 1, s)[0],
                                            np.arange(4, dtype=np.int64) % shape[0]),
    }
    for kernel, make in makers.items():
        _twice(cuda_plans.PLANS[kernel], make)


def test_sgd_without_momentum_binds_w_where_the_velocity_would_go():
    """v None: the plan passes w in v's slot (not read when momentum is 0); bound by
    position, the second call's w is in both slots."""
    cache = _twice(cuda_plans.plan_sgd_update,
                   lambda s: (*_arrays((6,), np.float32, 2, s), None, 0.1, 0.0, 0.0, False))
    w, g = _arrays((6,), np.float32, 2, 5)
    args = cache.launch((w, g, None, 0.1, 0.0, 0.0, False)).args
    assert args[0] is w and args[2] is w


def test_a_new_shape_memory_order_or_dtype_gets_a_new_plan():
    x = np.ones((2, 3, 8, 8), np.float32)
    win = Window(3, 3, 1, 1, 1, 1)
    cache = PlanCache(cuda_plans.plan_im2col)
    calls = [(x, win), (_laid(x, "batch-last"), win), (_laid(x, "strided"), win),
             (x.astype(np.float64), win), (x[:1], win), (x, Window(3, 3, 2, 2, 1, 1))]
    launches = []
    for n, args in enumerate(calls, start=1):
        launches.append(cache.launch(args))
        assert_same_launch(launches[-1], cuda_plans.plan_im2col(*args))
        assert len(cache.entries) == n, f"call {n}: {args[0].strides} made no plan of its own"
    assert launches[0].args[0].axes != launches[1].args[0].axes  # read in its memory order
    assert "double" in launches[3].name and "float" in launches[0].name


def test_an_array_passed_twice_binds_by_position():
    """The same array at two positions cannot be told apart by where it sits: such a call
    is planned uncached; a cached plan serves it, each slot taking its own position."""
    w, g, v = _arrays((5,), np.float32, 3, 0)
    cache = PlanCache(cuda_plans.plan_sgd_update)
    aliased = (w, w, v, 0.1, 0.9, 0.0, False)
    assert_same_launch(cache.launch(aliased), cuda_plans.plan_sgd_update(*aliased))
    assert not cache.entries
    cache.launch((w, g, v, 0.1, 0.9, 0.0, False))
    assert len(cache.entries) == 1
    assert_same_launch(cache.launch(aliased), cuda_plans.plan_sgd_update(*aliased))


def test_a_per_call_tail_that_is_not_the_launchs_end_is_refused():
    def tail(x: Any, lr: float) -> tuple[Any, ...]:
        return (np.float32(lr),)

    @per_call("lr", tail=tail)
    def plan_wrong(x: Any, lr: float) -> Launch:
        return Launch("k", (1, 1, 1), (32, 1, 1), (x, np.float32(lr), np.int32(7)))

    with pytest.raises(ValueError, match="plan_wrong: its per_call tail"):
        PlanCache(plan_wrong).launch((np.ones(3, np.float32), 0.5))


def test_per_call_names_a_parameter_of_the_plan():
    @per_call("rate", tail=lambda x, lr: ())
    def plan_misnamed(x: Any, lr: float) -> Launch:
        return Launch("k", (1, 1, 1), (32, 1, 1), (x,))

    with pytest.raises(TypeError, match=r"\['rate'\]"):
        PlanCache(plan_misnamed)


def test_a_cached_plan_keeps_no_array_and_gives_each_call_new_outputs():
    """What a cache keeps per signature holds no array of a call (a weak reference to the
    input dies with it), and each call's outputs are new buffers: an output a caller
    keeps from one step is never written by the next."""
    import gc
    import weakref

    cache = PlanCache(cuda_plans.plan_im2col)
    launched: list[tuple[str, tuple[Any, ...]]] = []
    win = Window(3, 3, 1, 1, 1, 1)
    x = np.ones((2, 3, 8, 8), np.float32)
    def record(key: tuple[None, str]) -> Any:
        return lambda grid, block, args: launched.append((key[1], args))

    functions = _Recorder(record)
    first = cache.run_on((x, win), np, lambda: None, functions)
    second = cache.run_on((x.copy(), win), np, lambda: None, functions)
    assert len(cache.entries) == 1 and len(launched) == 2
    assert first.shape == second.shape == (3, 3, 3, 2, 8, 8)
    assert not np.shares_memory(first, second)
    assert launched[0][1][0] is not launched[1][1][0]  # each call's own input in the slot
    alive = weakref.ref(x)
    del x, launched
    gc.collect()
    assert alive() is None


class _Recorder(dict):
    """A table of kernels whose every entry records its launch: functions[device, name]."""

    def __init__(self, make: Callable[[tuple[None, str]], Any]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: tuple[None, str]) -> Any:
        return self.make(key)
