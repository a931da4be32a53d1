"""The optimizer's handles and the guard's last-good arrays, as the step reads them.

Oracles: SGD's update written out (w - lr * g) for a handle that is not the model's
Parameter class; for the guard, the arrays' identities and shapes and the order of the
keys it records.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.divergence import LastFiniteState
from dualconv.optim import Parameter

F32 = np.float32


class Scaled(Parameter):
    """A handle whose gradient is twice its layer's: read through its properties."""

    @property
    def grad(self):
        g = self.layer.grads.get(self.key)
        return None if g is None else 2 * g


def model() -> dc.Sequential:
    net = dc.Sequential([dc.Flatten(), dc.Dense(None, 3)], seed=0)
    net.build((2, 1, 2, 2))
    return net


def test_a_handle_of_another_class_is_read_through_its_properties() -> None:
    net = model()
    dense = net.layers[1]
    dense.grads = {"weight": np.ones_like(dense.params["weight"]),
                   "bias": np.ones_like(dense.params["bias"])}
    w0, b0 = dense.params["weight"].copy(), dense.params["bias"].copy()
    dc.SGD([Scaled(dense, "weight", "w"), Parameter(dense, "bias", "b")], lr=0.5).step()
    assert_array_equal(dense.params["weight"], w0 - F32(0.5) * F32(2))  # the handle's doubled gradient
    assert_array_equal(dense.params["bias"], b0 - F32(0.5))


def test_last_goods_keeps_one_copy_per_live_array_and_records_the_keys_in_order() -> None:
    net = model()
    guard = LastFiniteState(net, dc.SGD(net.parameters(), lr=0.1, momentum=0.9))
    w, v = np.zeros((4, 3), F32), np.zeros((4, 3), F32)
    guard.begin_step(1, (0, 1))
    assert guard.code == 2
    (w_last,), (v_last,) = guard.last_goods(("p",), ("param", (w,)), ("velocity", (v,)))
    assert w_last.shape == w.shape and v_last.shape == v.shape and w_last is not v_last
    assert guard.current.updated == [("p", "param"), ("p", "velocity")]
    guard.begin_step(2, (2, 3))
    assert guard.code == 4
    (again,), = guard.last_goods(("p",), ("param", (w,)))
    assert again is w_last  # the same live array: the same copy
    (wider,), = guard.last_goods(("p",), ("param", (np.zeros((4, 5), F32),)))
    assert wider.shape == (4, 5)
    assert guard.current.updated == [("p", "param"), ("p", "param")]
    with pytest.raises(TypeError, match="last_goods: names must be a tuple of parameter names"):
        guard.last_goods("p", ("param", (w,)))
    with pytest.raises(ValueError):  # a name per array, no fewer
        guard.last_goods(("p", "q"), ("param", (w,)))
    assert guard.all_finite() and guard.code == 0


def test_last_goods_of_a_repeated_call_follow_every_change_of_its_arrays() -> None:
    """A step that repeats the last call's names and arrays gets the same copies and records
    the same keys; a call that changes one array (replaced, reshaped) or a name is the
    rule of one copy per live array again."""
    net = model()
    guard = LastFiniteState(net, dc.SGD(net.parameters(), lr=0.1))
    w, u = np.zeros((4, 3), F32), np.zeros(3, F32)
    guard.begin_step(1, (0, 1))
    first = guard.last_goods(("w", "u"), ("param", (w, u)))
    guard.begin_step(2, (2, 3))
    assert guard.last_goods(("w", "u"), ("param", (w, u))) == first  # the same tuple of copies
    assert [a is b for a, b in zip(guard.last_goods(("w", "u"), ("param", (w, u)))[0], first[0])] == [True, True]
    assert guard.current.updated == [("w", "param"), ("u", "param")] * 2
    replaced = np.ones((4, 3), F32)  # a new live array that fits the kept copy
    (w_last, u_last), = guard.last_goods(("w", "u"), ("param", (replaced, u)))
    assert w_last is first[0][0] and u_last is first[0][1]
    reshaped = np.zeros((2, 3), F32)
    (w_new, u_same), = guard.last_goods(("w", "u"), ("param", (reshaped, u)))
    assert w_new.shape == (2, 3) and w_new is not first[0][0] and u_same is first[0][1]
    (u_as_w, w_as_u), = guard.last_goods(("u", "w"), ("param", (reshaped, u)))  # the names swapped
    assert u_as_w.shape == (2, 3) and w_as_u.shape == (3,)
    assert u_as_w is not w_new and w_as_u is not u_same
    assert guard.current.updated[-2:] == [("u", "param"), ("w", "param")]


def test_last_goods_after_a_call_that_raised_give_the_copies_restore_reads() -> None:
    """A call that raised part-way (a name per array, no fewer) may have made new copies;
    the next call's copies are those the guard restores from, whatever came before."""
    net = model()
    dense = net.layers[1]
    guard = LastFiniteState(net, dc.SGD(net.parameters(), lr=0.1))
    live = dense.params["weight"]
    name = "1.Dense.weight"
    guard.begin_step(1, (0, 1))
    (first,), = guard.last_goods((name,), ("param", (live,)))
    with pytest.raises(ValueError):
        guard.last_goods((name, "extra"), ("param", (np.zeros(5, F32),)))
    (copy,), = guard.last_goods((name,), ("param", (live,)))
    good = live.copy()
    copy[...] = live  # what the guarded update does before it changes the weights
    live[...] = np.nan
    guard.verdict[0] = guard.code + 1
    assert not guard.all_finite()
    guard.restore()
    assert_array_equal(dense.params["weight"], good)


def test_last_goods_take_the_live_arrays_as_any_iterable() -> None:
    net = model()
    guard = LastFiniteState(net, dc.SGD(net.parameters(), lr=0.1))
    w, u = np.zeros((4, 3), F32), np.zeros(3, F32)
    for step in (1, 2):
        guard.begin_step(step, (0, 1))
        (copies,) = guard.last_goods(("w", "u"), ("param", iter((w, u))))
        assert [c.shape for c in copies] == [(4, 3), (3,)]


def test_a_copy_made_for_another_list_of_names_is_the_one_every_list_takes() -> None:
    """One last-good copy per (name, slot), whatever list of names asked for it: after a
    call for b alone changed b's copy, the pair's next call takes b's current copy, and
    b's next call alone the pair's."""
    net = model()
    guard = LastFiniteState(net, dc.SGD(net.parameters(), lr=0.1))
    w, u, u_other = np.zeros((4, 3), F32), np.zeros(3, F32), np.zeros(5, F32)
    guard.begin_step(1, (0, 1))
    guard.last_goods(("a", "b"), ("param", (w, u)))
    guard.begin_step(2, (0, 1))
    guard.last_goods(("b",), ("param", (u_other,)))
    guard.begin_step(3, (0, 1))
    (pair,) = guard.last_goods(("a", "b"), ("param", (w, u)))
    guard.begin_step(4, (0, 1))
    (alone,) = guard.last_goods(("b",), ("param", (u,)))
    assert alone[0] is pair[1] and pair[1].shape == (3,)


class FrozenGrads(dict):
    """A layer's grads that hide one key from whoever asks with get (as Parameter.grad does)."""

    def get(self, key, default=None):
        return default if key == "weight" else super().get(key, default)


def test_a_grads_mapping_of_its_own_is_read_as_the_handle_reads_it() -> None:
    net = model()
    dense = net.layers[1]
    dense.grads = FrozenGrads(weight=np.ones_like(dense.params["weight"]),
                              bias=np.ones_like(dense.params["bias"]))
    w0, b0 = dense.params["weight"].copy(), dense.params["bias"].copy()
    dc.SGD(net.parameters(), lr=0.5).step()
    assert_array_equal(dense.params["weight"], w0)  # its handle has no gradient: not updated
    assert_array_equal(dense.params["bias"], b0 - F32(0.5))


def test_last_goods_take_the_names_as_any_sequence() -> None:
    net = model()
    guard = LastFiniteState(net, dc.SGD(net.parameters(), lr=0.1))
    w = np.zeros((4, 3), F32)
    for step, names in ((1, ["w"]), (2, ("w",))):
        guard.begin_step(step, (0, 1))
        (copies,) = guard.last_goods(names, ("param", (w,)))
        assert [c.shape for c in copies] == [(4, 3)]
