"""A model's parameter handles, buffer names and run order are kept between steps
(model.py), and stay right: a lazy layer's first forward, a move, a cast, a load and a
change to ``layers`` give what listing the model afresh gives."""
from __future__ import annotations

import numpy as np

import dualconv as dc
from dualconv.model import run_order


def _fresh(model: dc.Sequential) -> list[tuple[str, object]]:
    """(name, array) of every parameter, listed from the layers (the oracle)."""
    return [(f"{i}.{layer.name}.{key}", layer.params[key])
            for i, layer in enumerate(model.layers) for key in layer.params]


def _listed(model: dc.Sequential) -> list[tuple[str, object]]:
    return [(p.name, p.data) for p in model.parameters()]


def _same(a: list[tuple[str, object]], b: list[tuple[str, object]]) -> bool:
    return [n for n, _ in a] == [n for n, _ in b] and all(x is y for (_, x), (_, y) in zip(a, b))


def _model() -> dc.Sequential:
    return dc.Sequential([dc.Conv2D(None, 2, 3), dc.BatchNorm2D(), dc.ReLU(), dc.MaxPool2D(2),
                          dc.Flatten(), dc.Dense(None, 3)], seed=0)


def test_a_lazy_models_parameters_appear_at_its_first_forward():
    model = _model()
    view = model.parameters()
    optimizer = dc.SGD(view, lr=0.1)  # made before the first forward, as the docs allow
    before = len(view)
    model.forward(np.ones((2, 1, 6, 6), np.float32))
    assert before < len(view) == len(_fresh(model)) == 6
    assert _same(_listed(model), _fresh(model))
    assert [p.name for p in optimizer.params] == [n for n, _ in _fresh(model)]


def test_a_move_a_cast_and_a_load_are_seen_through_the_same_handles():
    model = _model()
    model.forward(np.ones((2, 1, 6, 6), np.float32))
    names = [p.name for p in model.parameters()]
    state = {k: v + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert _same(_listed(model), _fresh(model))
    np.testing.assert_array_equal(next(iter(model.parameters())).data, state["0.Conv2D.weight"])
    model.astype(np.float64)
    assert _same(_listed(model), _fresh(model))
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    model.to("numpy")
    assert _same(_listed(model), _fresh(model)) and [p.name for p in model.parameters()] == names


def test_a_change_to_the_layers_or_their_keys_makes_a_new_listing():
    model = _model()
    model.forward(np.ones((2, 1, 6, 6), np.float32))
    assert _same(_listed(model), _fresh(model))
    model.layers.append(dc.Dense(3, 4))
    model.layers[-1].build((2, 3), rng=np.random.default_rng(0), dtype=np.float32)
    assert _same(_listed(model), _fresh(model)) and len(_listed(model)) == 8
    del model.layers[-1].params["bias"]
    assert _same(_listed(model), _fresh(model)) and len(_listed(model)) == 7
    model.layers[2], model.layers[3] = model.layers[3], model.layers[2]
    assert _same(_listed(model), _fresh(model))


def test_buffers_are_named_afresh_and_a_callers_dict_is_its_own():
    model = _model()
    model.forward(np.ones((2, 1, 6, 6), np.float32))
    first = model.buffers()
    expected = {f"{i}.{layer.name}.{key}": (layer, key)
                for i, layer in enumerate(model.layers) for key in layer.buffers}
    assert first == expected and first
    first.clear()
    assert model.buffers() == expected
    model.layers.insert(0, dc.BatchNorm2D(1))
    assert model.buffers() == {f"{i}.{layer.name}.{key}": (layer, key)
                               for i, layer in enumerate(model.layers) for key in layer.buffers}


def test_the_run_order_follows_the_layers():
    model = dc.Sequential([dc.Conv2D(1, 2, 3), dc.ReLU(), dc.MaxPool2D(2), dc.Flatten()], seed=0)
    x = np.ones((2, 1, 6, 6), np.float32)
    model.forward(x)
    assert [type(l) for l in model._run_order] == [dc.Conv2D, dc.MaxPool2D, dc.ReLU, dc.Flatten]
    model.layers[1] = dc.Tanh()
    model.forward(x)
    assert model._run_order == run_order(model.layers)
    assert [type(l) for l in model._run_order] == [dc.Conv2D, dc.Tanh, dc.MaxPool2D, dc.Flatten]
