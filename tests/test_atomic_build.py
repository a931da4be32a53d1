"""A model or layer that rejects an input is left exactly as it was; unbuilt models say so.

The oracle for "exactly as it was" is a second model made with the same seed that
never saw the bad input: after the rejection both must give bitwise-equal outputs.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.models import lenet

X = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)


def test_wrong_ndim_names_the_layer_and_layout_and_changes_nothing() -> None:
    model, fresh = lenet(seed=0), lenet(seed=0)
    with pytest.raises(ValueError, match=r"^Conv2D: expected a 4-D input \(N, C, H, W\), got shape \(5, 28, 28\)$"):
        model.predict(X[:, 0])
    assert model.input_shape is None
    assert all(not layer.built and not layer.params for layer in model.layers if layer.needs_build)
    assert model.layers[0].in_channels is None
    assert_array_equal(model.predict(X), fresh.predict(X))  # the seed's weights, drawn only now


def test_a_shape_rejected_deep_in_the_chain_builds_no_layer() -> None:
    """(1, 1, 6, 6): conv1 (padding 2) fits, conv2 would not; conv1 must stay unbuilt too."""
    model = lenet(seed=0)
    with pytest.raises(ValueError, match=r"Conv2D: kernel \(5, 5\) .*larger than the padded input \(3, 3\)"):
        model.build((1, 1, 6, 6))
    assert [layer.name for layer in model.layers if layer.built] == []
    assert model.input_shape is None
    model.build((1, 1, 28, 28))
    assert model.layers[0].params["weight"].shape == (6, 1, 5, 5)


def test_a_built_model_rejects_a_new_shape_before_any_layer_runs() -> None:
    model = lenet(seed=0)
    model.predict(X)
    model.eval()
    model.forward(X[:2])
    caches = [layer._cache for layer in model.layers]
    with pytest.raises(ValueError, match=r"Dense: expected 400 input features, got 576"):
        model.forward(np.zeros((2, 1, 32, 32), np.float32))
    assert all(a is b for a, b in zip(caches, (layer._cache for layer in model.layers)))


def test_check_shapes_lists_every_layers_input_shape() -> None:
    shapes = lenet(seed=0).check_shapes((7, 1, 28, 28))
    # by hand: pad-2 5x5 conv keeps 28; pool 14; valid 5x5 conv 10; pool 5; flatten 16*5*5 = 400
    assert shapes == [(7, 1, 28, 28), (7, 6, 28, 28), (7, 6, 28, 28), (7, 6, 14, 14), (7, 16, 10, 10),
                      (7, 16, 10, 10), (7, 16, 5, 5), (7, 400), (7, 84), (7, 84), (7, 10)]


def test_layer_build_with_a_bad_shape_leaves_it_unbuilt() -> None:
    layer = dc.Dense(None, 3)
    with pytest.raises(ValueError, match=r"Dense: expected a 2-D input"):
        layer.build((4, 2, 2))
    assert not layer.built and layer.in_features is None and not layer.params


def test_saving_a_never_built_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"Sequential.save: the model is not built yet .*0.Conv2D.*build\("):
        lenet(seed=0).save(tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())


def test_load_state_dict_on_an_unbuilt_model_asks_for_a_build() -> None:
    built = lenet(seed=0)
    built.build((1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"Sequential.load_state_dict: the model is not built yet.*build"):
        lenet(seed=1).load_state_dict(built.state_dict())


def test_a_model_without_lazy_layers_saves_without_a_forward(tmp_path) -> None:
    model = dc.Sequential([dc.Dense(3, 2), dc.ReLU()], seed=0)
    model.save(tmp_path / "m.npz")
    x = np.ones((2, 3), np.float32)
    assert_array_equal(dc.Sequential.load(tmp_path / "m.npz").predict(x), model.predict(x))


def test_predict_proba_is_the_softmax_of_the_logits() -> None:
    model = lenet(seed=0)
    logits = model.predict(X).astype(np.float64)
    proba = model.predict_proba(X)
    # Oracle in float64 from the same float32 logits. float32 error: rounding z - max
    # (|z - max| < 8 here, so under 8 eps relative after exp), exp and the division
    # (a few eps), the 10-term sum (10 eps): 64 eps covers it.
    assert np.ptp(logits, axis=1).max() < 8
    for row, z in zip(proba, logits):
        e = np.exp(z - z.max())
        np.testing.assert_allclose(row, e / e.sum(), rtol=64 * np.finfo(np.float32).eps, atol=0)
    assert proba.shape == (5, 10)


def test_predict_proba_of_a_model_ending_in_softmax_is_its_output() -> None:
    model = dc.Sequential([dc.Dense(4, 3), dc.Softmax()], seed=0)
    x = np.random.default_rng(1).random((6, 4), dtype=np.float32)
    assert_array_equal(model.predict_proba(x), model.predict(x))
