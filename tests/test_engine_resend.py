"""A forward call sent again without pickling (dualconv/engine/resend.py): after the first
step the worker's forward call is the kept packing refilled, and whatever a layer holds
anew between steps (a parameter array replaced, a number changed, an array reshaped in
place) reaches the worker as a fresh pickle would carry it.

Oracle: the same model's forward on one core, where no part leaves the calling process.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dualconv.engine import resend, reuse, set_num_threads, workers
from dualconv.layers import Conv2D, Dense, Flatten, LeakyReLU, MaxPool2D
from dualconv.losses import SoftmaxCrossEntropy
from dualconv.model import Sequential
from dualconv.models import lenet

pytestmark = pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")

X = np.random.default_rng(7).random((256, 1, 28, 28), dtype=np.float32)


def _count_calls(monkeypatch, which: int) -> dict:
    """{"again": calls sent again, "packed": calls packed}, in call slot ``which``, processes."""
    monkeypatch.setenv("DUALCONV_WORKERS", "processes")
    counts = {"again": 0, "packed": 0}
    start, start_again = workers.Worker.start, workers.Worker.start_again

    def counting_start(self, call, slot=0, keep=False):
        counts["packed"] += slot == which
        return start(self, call, slot, keep)

    def counting_again(self, slot, arrays):
        sent = start_again(self, slot, arrays)
        counts["again"] += sent and slot == which
        return sent
    monkeypatch.setattr(workers.Worker, "start", counting_start)
    monkeypatch.setattr(workers.Worker, "start_again", counting_again)
    return counts


@pytest.fixture
def counted(monkeypatch):
    """The forward calls' counts (_count_calls of slot 0) on two cores."""
    counts = _count_calls(monkeypatch, 0)
    set_num_threads(2)
    yield counts
    set_num_threads(None)


def _on_one_core(model: Sequential, x: np.ndarray) -> np.ndarray:
    set_num_threads(1)
    try:
        return model.forward(x)
    finally:
        set_num_threads(2)


def _warm(model: Sequential, counts: dict) -> Sequential:
    """The model after two forwards (the first adds the lazy layers' parameters, and each
    layer's notes of its input), the counts then set back to 0."""
    model.forward(X)
    model.forward(X)
    counts.update(again=0, packed=0)
    return model


def _leaky_lenet() -> Sequential:
    return Sequential([Conv2D(None, 6, 5, padding=2), LeakyReLU(0.5), MaxPool2D(2, 2), Flatten(),
                       Dense(None, 10)], seed=0)


def test_later_forwards_send_the_kept_call_again_with_the_same_bits(counted) -> None:
    model = _warm(lenet(seed=0), counted)
    outs = [model.forward(X * k) for k in (1.0, 0.5, 2.0)]
    assert counted == {"again": 3, "packed": 0}
    for k, out in zip((1.0, 0.5, 2.0), outs):
        assert_array_equal(out, _on_one_core(model, X * k))


def test_a_parameter_array_replaced_between_forwards_reaches_the_worker(counted) -> None:
    model = _warm(lenet(seed=0), counted)
    dense = model.layers[-1]
    dense.params["weight"] = dense.params["weight"] * 3  # a new array of the same shape
    out = model.forward(X)
    assert counted == {"again": 0, "packed": 1}
    assert_array_equal(out, _on_one_core(model, X))


def test_a_number_changed_between_forwards_reaches_the_worker(counted) -> None:
    model = _warm(_leaky_lenet(), counted)
    model.layers[1].alpha = 0.25
    out = model.forward(X)
    assert counted == {"again": 0, "packed": 1}
    assert_array_equal(out, _on_one_core(model, X))


def test_an_array_reshaped_in_place_is_packed_afresh(counted) -> None:
    model = _warm(_leaky_lenet(), counted)
    kernel = model.layers[0].params["weight"]
    kernel.shape = (kernel.shape[0], -1)  # the same object, another shape: the kept places no longer fit
    with pytest.raises(ValueError):
        model.forward(X)  # Conv2D refuses the kernel's shape: in the worker's call too, packed afresh
    assert counted["packed"] == 1



def test_a_layer_holding_a_list_is_never_kept(counted) -> None:
    model = lenet(seed=0)
    model.layers[1].notes = []  # a list could change in place without a new object
    _warm(model, counted)
    for _ in range(3):
        model.forward(X)
    assert counted == {"again": 0, "packed": 3}


def test_contents_compare_equal_plain_values_and_tell_signed_zeros_apart() -> None:
    assert resend._same([("a", 1, (2, 3)), 1.5], [("a", 1, (2, 3)), 1.5])
    assert not resend._same([0.0], [-0.0])
    nan = float("nan")
    assert resend._same([float("nan")], [float("nan")]) and not resend._same([nan], [-nan])  # pickled apart
    assert resend._same([b"ab"], [bytes([97, 98])])
    assert not resend._same([[1]], [[1]])  # a list is the same object or different
    assert not resend._same([1], [True])
    assert not resend._same([1], [1, 2])


class _Plain:
    pass


def test_contents_tell_an_entry_moved_into_a_dict_from_an_attribute() -> None:
    before, after = _Plain(), _Plain()
    before.cfg, before.scale = {}, 2.0
    after.cfg = {"scale": 2.0}  # the same names and values in one flat order, another state
    assert not resend._same(resend.contents([before]), resend.contents([after]))


class _Factor(float):
    __slots__ = ("offset",)  # a float that can change in place


class _Slotted:
    __slots__ = ("grads", "_cache", "first_sample", "training")


def test_values_that_can_change_in_place_keep_no_call() -> None:
    assert not reuse._unchangeable(_Factor(1.0))
    assert reuse._unchangeable(1.0) and reuse._unchangeable(np.float32(1.0))
    assert not reuse._unchangeable(np.dtype([("a", np.float32)]))  # its field names can be set
    assert resend.contents([_Slotted()]) is None  # no __dict__: packed afresh each call


def test_later_backwards_send_the_kept_call_again_with_the_one_core_bits(monkeypatch) -> None:
    """A backward call packs to the same bytes every step (resend.start_alike: its token is an
    array): packed once, then its arrays alone copied; a call of another form (no input
    gradient asked) is packed afresh. Every gradient is the one-core run's, bit for bit."""
    counts = _count_calls(monkeypatch, 1)
    y = np.random.default_rng(8).integers(0, 10, len(X))
    steps = [(1.0, True), (0.5, True), (2.0, True), (1.5, False), (3.0, False)]
    results = {}
    for threads in (1, 2):  # the one-core oracle first: the two-core steps then follow each other
        model, loss = lenet(seed=0), SoftmaxCrossEntropy()
        set_num_threads(threads)
        try:
            for k, input_grad in steps:
                loss.forward(model.forward(X * k), y)
                gx = model.backward(loss.backward(), input_grad=input_grad)
                results[threads, k] = gx, [dict(layer.grads) for layer in model.layers]
        finally:
            set_num_threads(None)
    for k, input_grad in steps:
        (gx, grads), (gx_one, grads_one) = results[2, k], results[1, k]
        assert (gx is None) == (not input_grad) and (gx is None or np.array_equal(gx, gx_one))
        for mine, oracle in zip(grads, grads_one):
            for name, g in oracle.items():
                assert_array_equal(mine[name], g, err_msg=f"x{k} {name}")
    assert counts == {"packed": 2, "again": 3}
