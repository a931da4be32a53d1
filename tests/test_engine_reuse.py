"""A worker reusing what it unpickled (dualconv/engine/reuse.py, workers.py): the same
objects come back for a call packed to the same bytes, showing the new array values, and
a step in parts gives the bits of a fresh unpickle (one core against two) for layers
whose state a pass changes in place, whose class unpickles with its own code, or that
keep their attributes in slots.

Oracle: the same model trained on one core, where no part leaves the calling process.
"""
from __future__ import annotations

import copyreg
import os
import pickle
from collections import namedtuple
from functools import cached_property

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.engine import passes, reuse, workers
from dualconv.models import fast, lenet, lenet_bn

pytestmark = pytest.mark.skipif(not workers.available(), reason="worker processes need Linux (fork)")


class _Box:
    """A plain object with an array and a number."""

    def __init__(self, values: np.ndarray, scale: float) -> None:
        self.values, self.scale = values, scale


def _identify(box: _Box) -> tuple[int, float]:
    return id(box), float(box.values.sum() * box.scale)


_identify.arguments_reusable = lambda args: True  # type: ignore[attr-defined]


def _call(function, *args):
    worker = workers.ready_workers(1, check_code=False)[0]
    assert worker.start((function, args))
    ok, value = worker.finish()
    assert ok
    return value


def _pid_of(box: _Box) -> int:
    return os.getpid()


def _refuse(args) -> bool:
    raise AttributeError("a predicate that fails")


_pid_of.arguments_reusable = _refuse  # type: ignore[attr-defined]


def test_a_predicate_that_raises_means_not_reusable_and_the_worker_lives_on() -> None:
    first = _call(_pid_of, _Box(np.ones(5, np.float32), 2.0))
    assert first != os.getpid() and _call(_pid_of, _Box(np.ones(5, np.float32), 2.0)) == first


def test_a_call_packed_to_the_same_bytes_gets_the_same_objects_with_the_new_values() -> None:
    first, total = _call(_identify, _Box(np.ones(5, np.float32), 2.0))
    assert total == 10.0
    again, total = _call(_identify, _Box(np.full(5, 3.0, np.float32), 2.0))
    assert again == first and total == 30.0  # the same object, the new array values
    other, total = _call(_identify, _Box(np.full(5, 3.0, np.float32), 1.0))  # another number: other bytes
    assert other != first and total == 15.0


def _unpickled_twins(model: dc.Sequential) -> list[list]:
    return pickle.loads(pickle.dumps([[passes.twin(layer, 2) for layer in model.layers]]))


@pytest.mark.parametrize("make", [lenet, fast])
def test_the_bundled_sample_by_sample_models_are_reusable(make) -> None:
    model = make(seed=0)
    model.build((2, 1, 28, 28))
    assert reuse.remember(_unpickled_twins(model))


def test_a_dropout_model_is_not_reusable() -> None:
    """Dropout keeps its seed in a list, which a call could change in place."""
    model = lenet_bn(seed=0)
    model.build((2, 1, 28, 28))
    assert not reuse.remember(_unpickled_twins(model))


def test_set_back_undoes_what_a_call_changed() -> None:
    model = lenet(seed=0)
    model.build((2, 1, 28, 28))
    twins = _unpickled_twins(model)
    assert reuse.remember(twins)
    dense = twins[0][7]
    weight = dense.params["weight"]
    dense.params["extra"] = np.zeros(3)
    dense.training, dense._cache, dense.grads["weight"] = False, (1, 2), np.ones(3)
    reuse.set_back(twins)
    assert set(dense.params) == {"weight", "bias"} and dense.params["weight"] is weight
    assert dense.training is True and dense._cache is None and dense.grads == {}


class _CachedScale(dc.Layer):
    """y = x * exp(w), exp(w) kept in a dict that the training loop empties after each step:
    the caller's layer always pickles an empty cache, while a pass fills the twin's."""

    couples_samples = False

    def __init__(self) -> None:
        super().__init__()
        self.memo: dict = {}

    def after_step(self) -> None:
        self.memo.clear()

    def _create_params(self, input_shape, rng) -> None:
        self._set_param("weight", np.zeros(input_shape[1:], np.float32))

    def _forward(self, x):
        if "scale" not in self.memo:
            self.memo["scale"] = np.exp(self.params["weight"])
        self._cache = (x, self.memo["scale"])
        return x * self.memo["scale"]

    def _backward(self, gy):
        x, s = self._cache
        self.grads["weight"] = (gy * x * s).sum(axis=0)
        return gy * s


class _TableScale(_CachedScale):
    """exp(w) left out of the pickle and made again by __setstate__ from the weight."""

    def __getstate__(self):
        state = dict(self.__dict__)
        state["memo"] = {}
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        if "weight" in self.params:
            self.memo["scale"] = np.exp(self.params["weight"])


class _SlotScale(_CachedScale):
    """One attribute in a slot, which a twin must copy."""

    __slots__ = ("gain",)

    def __init__(self) -> None:
        super().__init__()
        self.gain = 2.0

    def _forward(self, x):
        return super()._forward(x) * self.gain

    def _backward(self, gy):
        return super()._backward(gy * self.gain)


class _RegisteredScale(_CachedScale):
    """exp(w) made again on unpickling by a reducer registered with copyreg."""


def _rebuild_registered(state: dict) -> _RegisteredScale:
    layer = _RegisteredScale.__new__(_RegisteredScale)
    layer.__dict__.update(state)
    if "weight" in layer.params:
        layer.memo["scale"] = np.exp(layer.params["weight"])
    return layer


copyreg.pickle(_RegisteredScale, lambda layer: (_rebuild_registered, ({**vars(layer), "memo": {}},)))


class _AliasScale(_CachedScale):
    """Two names for one dict: the scale is written into the buffers through one and read
    through the other (a pass that sees two dicts reads the value the caller pickled)."""

    def __init__(self) -> None:
        super().__init__()
        self.state = self.buffers

    def _create_params(self, input_shape, rng) -> None:
        super()._create_params(input_shape, rng)
        self._set_buffer("scale", np.ones(input_shape[1:], np.float32))

    def _forward(self, x):
        self.state["scale"] = np.exp(self.params["weight"])
        s = self.buffers["scale"]
        self._cache = (x, s)
        return x * s


class _Weights(namedtuple("_Weights", "w")):
    """A namedtuple subclass with a __dict__ (it has no __slots__): a cached value in it."""

    @cached_property
    def scale(self):
        return np.exp(self.w)


class _TupleScale(_CachedScale):
    """exp(w) cached on a namedtuple subclass that holds the weight."""

    def _create_params(self, input_shape, rng) -> None:
        super()._create_params(input_shape, rng)
        self.view = _Weights(self.params["weight"])

    def _forward(self, x):
        self.memo["scale"] = self.view.scale
        return super()._forward(x)

    def after_step(self) -> None:
        super().after_step()
        vars(self.view).clear()


def _train(layer_class: type, threads: int) -> dict:
    dc.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        X = rng.random((2048, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, len(X))
        scale = layer_class()
        model = dc.Sequential([dc.Flatten(), scale, dc.Dense(None, 10)], seed=0)
        model.build((1, 1, 28, 28))
        assert len(passes.split(model.layers, X)) > 1
        opt, loss = dc.SGD(model.parameters(), lr=0.5), dc.SoftmaxCrossEntropy()
        for _ in range(4):
            loss.forward(model.forward(X), y)
            model.backward(loss.backward(), input_grad=False)
            opt.step()
            scale.after_step()
        return model.state_dict()
    finally:
        dc.set_num_threads(None)


@pytest.mark.parametrize("layer_class", [_CachedScale, _TableScale, _SlotScale, _RegisteredScale, _AliasScale,
                                         _TupleScale])
def test_layers_a_reused_twin_would_get_wrong_train_as_on_one_core(layer_class, monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_WORKERS", "processes")
    one, two = _train(layer_class, 1), _train(layer_class, 2)
    assert one.keys() == two.keys()
    for name in one:
        assert_array_equal(two[name], one[name], err_msg=name)
