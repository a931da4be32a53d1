"""Sequential: forward/backward, parameters, modes, summary, state, save/load, dtype, init."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.init import glorot_normal, glorot_uniform, he_normal, he_uniform
from dualconv.models import lenet, weidman

from error_bounds import (TRANSCENDENTAL_ULPS, assert_within, exact_forward, forward_error_bound, matmul_bound,
                          unit_roundoff)


def randn(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# -- forward / backward ------------------------------------------------------------

def test_forward_is_the_layers_in_order_and_backward_in_reverse() -> None:
    layers = [dc.Dense(4, 3), dc.Tanh(), dc.Dense(3, 2)]
    model = dc.Sequential(layers, seed=0, dtype=np.float64)
    x = randn((5, 4), dtype=np.float64)
    w1, b1 = layers[0].params["weight"], layers[0].params["bias"]
    w2, b2 = layers[2].params["weight"], layers[2].params["bias"]
    h = np.tanh(x @ w1 + b1)
    y = model.forward(x)
    # Each side is one float64 matmul (any summation order) of the same
    # operands, up to tanh's rounding in h: twice the matmul bound, plus slack
    # for the few ULP by which the two h may differ.
    h_slack = 2 * TRANSCENDENTAL_ULPS * unit_roundoff(np.float64) * np.abs(h)
    assert_within(y, h @ w2 + b2, 2 * matmul_bound(h, w2) + h_slack @ np.abs(w2))
    gy = randn((5, 2), 1, np.float64)
    gx = model.backward(gy)
    gh = gy @ w2.T
    assert_within(layers[2].grads["weight"], h.T @ gy, 2 * matmul_bound(h.T, gy) + h_slack.T @ np.abs(gy))
    local = gh * (1 - h ** 2)
    local_slack = 8 * unit_roundoff(np.float64) * np.abs(gh) * (1 + h ** 2) + np.abs(gh) * 2 * np.abs(h) * h_slack
    assert_within(layers[0].grads["weight"], x.T @ local,
                  2 * matmul_bound(x.T, local) + np.abs(x.T) @ local_slack)
    assert_within(gx, local @ w1.T, 2 * matmul_bound(local, w1.T) + local_slack @ np.abs(w1.T))


def test_forward_casts_input_to_the_model_dtype() -> None:
    model = dc.Sequential([dc.Dense(None, 2)], seed=0)
    y = model.forward(randn((3, 4), dtype=np.float64))
    assert y.dtype == np.float32


def test_parameter_names() -> None:
    model = lenet(seed=0)
    model.build((1, 1, 28, 28))
    names = [p.name for p in model.parameters()]
    assert names == ["0.Conv2D.weight", "0.Conv2D.bias", "3.Conv2D.weight", "3.Conv2D.bias",
                     "7.Dense.weight", "7.Dense.bias", "9.Dense.weight", "9.Dense.bias"]


def test_sequential_rejects_non_layers() -> None:
    with pytest.raises(TypeError, match="Sequential: item 1"):
        dc.Sequential([dc.ReLU(), "relu"])


# -- train / eval -------------------------------------------------------------------

def test_train_and_eval_switch_dropout() -> None:
    model = dc.Sequential([dc.Dropout(0.5)], seed=0)
    x = np.ones((20, 20), dtype=np.float32)
    assert model.training
    y_train = model.forward(x)
    assert set(np.unique(y_train)) == {0.0, 2.0}
    model.eval()
    assert not model.training and not model.layers[0].training
    assert_array_equal(model.forward(x), x)
    model.train()
    assert model.layers[0].training
    assert (model.forward(x) == 0).any()


# -- summary -----------------------------------------------------------------------

def test_lenet_summary_shapes_and_parameter_count() -> None:
    model = lenet(seed=0)
    text = model.summary((1, 1, 28, 28))
    # counted by hand: conv1 6*1*5*5 + 6, conv2 16*6*5*5 + 16, dense 400*84 + 84, 84*10 + 10
    total = (6 * 1 * 5 * 5 + 6) + (16 * 6 * 5 * 5 + 16) + (400 * 84 + 84) + (84 * 10 + 10)
    assert total == 37106
    assert f"Total params: {total:,}" in text
    lines = text.splitlines()
    expected = [("Conv2D-1", "[-1, 6, 28, 28]", "156"), ("ReLU-2", "[-1, 6, 28, 28]", "0"),
                ("MaxPool2D-3", "[-1, 6, 14, 14]", "0"), ("Conv2D-4", "[-1, 16, 10, 10]", "2,416"),
                ("ReLU-5", "[-1, 16, 10, 10]", "0"), ("MaxPool2D-6", "[-1, 16, 5, 5]", "0"),
                ("Flatten-7", "[-1, 400]", "0"), ("Dense-8", "[-1, 84]", "33,684"),
                ("ReLU-9", "[-1, 84]", "0"), ("Dense-10", "[-1, 10]", "850")]
    for name, shape, count in expected:
        row = [line for line in lines if line.split() and line.split()[0] == name]
        assert len(row) == 1, name
        assert shape in row[0] and row[0].rstrip().endswith(count), row[0]
    assert sum(p.data.size for p in model.parameters()) == total


def test_summary_of_an_unbuilt_model_needs_a_shape() -> None:
    with pytest.raises(ValueError, match="summary"):
        lenet().summary()


# -- state ---------------------------------------------------------------------------

def test_state_dict_round_trip() -> None:
    a, b = lenet(seed=1), lenet(seed=2)
    x = randn((3, 1, 28, 28))
    a.forward(x)
    b.forward(x)
    assert not np.array_equal(a.predict(x), b.predict(x))
    state = a.state_dict()
    b.load_state_dict(state)
    assert_array_equal(b.predict(x), a.predict(x))
    state["0.Conv2D.weight"][...] = 0  # a copy: the model is not touched
    assert a.layers[0].params["weight"].any()


def test_load_state_dict_rejects_wrong_names_and_shapes() -> None:
    model = dc.Sequential([dc.Dense(3, 2)], seed=0)
    state = model.state_dict()
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({})
    with pytest.raises(ValueError, match="0.Dense.weight"):
        model.load_state_dict({**state, "0.Dense.weight": np.zeros((2, 3))})


@pytest.mark.parametrize("make", [lenet, weidman], ids=["lenet", "weidman"])
def test_save_and_load_give_identical_predictions(make, tmp_path) -> None:
    model = make(seed=3)
    x = randn((5, 1, 28, 28), 4)
    before = model.predict(x)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = dc.Sequential.load(path)
    assert [type(la) for la in loaded.layers] == [type(la) for la in model.layers]
    assert_array_equal(loaded.predict(x), before)
    assert loaded.dtype == model.dtype


def test_save_load_keeps_float64_and_layer_config(tmp_path) -> None:
    model = dc.Sequential([dc.Conv2D(None, 2, (3, 1), stride=(2, 1), padding=(1, 0),
                                     bias=False), dc.LeakyReLU(0.2), dc.Flatten(),
                           dc.Dense(None, 3)], seed=0, dtype=np.float64)
    x = randn((2, 1, 5, 4), 5, np.float64)
    y = model.forward(x)
    model.save(tmp_path / "m.npz")
    loaded = dc.Sequential.load(tmp_path / "m.npz")
    assert loaded.dtype == np.float64
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    assert loaded.layers[1].alpha == 0.2
    assert_array_equal(loaded.forward(x), y)


@pytest.mark.parametrize("x", [np.zeros((0, 1, 28, 28), np.float32), np.array(1.0, np.float32)],
                         ids=["no samples", "0-d"])
def test_predict_refuses_an_array_without_samples_with_one_clear_error(x) -> None:
    """An empty batch or a 0-d array: one ValueError naming the method and the shape (they
    raised IndexError and TypeError from inside predict before); the model left as it was."""
    model = lenet(seed=0)
    with pytest.raises(ValueError, match=r"Sequential\.predict: expected one sample or more, got an array of shape"):
        model.predict(x)
    assert model.training and model.needs_build


@pytest.mark.parametrize("name, mode", [("lenet", "train"), ("lenet", "eval"), ("weidman", "train"),
                                        ("weidman", "eval"), ("mlp", "train"), ("lenet_bn", "eval")])
def test_an_empty_batch_goes_forward_and_back(name: str, mode: str) -> None:
    """A batch of no images (as PyTorch allows): outputs (0, classes), an input gradient
    (0, 1, 28, 28) and every parameter's gradient zero, a sum over no samples. (Flatten
    raised "cannot reshape array of size 0" from inside before.)"""
    model = getattr(dc.models, name)(seed=0)
    model.build((1, 1, 28, 28))
    getattr(model, mode)()
    out = model.forward(np.zeros((0, 1, 28, 28), np.float32))
    assert out.shape == (0, 10)
    gx = model.backward(np.zeros((0, 10), np.float32), input_grad=True)
    assert gx.shape == (0, 1, 28, 28)
    for layer in model.layers:
        for key, grad in layer.grads.items():
            assert grad.shape == layer.params[key].shape
            assert not grad.any(), f"{layer.name}.{key}"


def test_predict_in_batches_equals_forward_in_eval_mode() -> None:
    model = weidman(seed=0)  # has Dropout, so train-mode forward differs
    x = randn((10, 1, 28, 28), 6)
    got = model.predict(x, batch_size=3)
    assert model.training  # predict restores the mode
    model.eval()
    # Batches of 3 and one batch of 10 reach BLAS kernels that sum in other orders.
    bound = forward_error_bound(model, x)
    assert_within(got, exact_forward(model, x), bound, "predict: ")
    assert_within(got, model.forward(x), 2 * bound, "predict vs forward: ")
    assert got.shape == (10, 10)
    assert_array_equal(model.predict_classes(x, batch_size=4), got.argmax(axis=1))


@pytest.mark.parametrize("kind", ["processes", "threads"])
@pytest.mark.parametrize("threads", [1, 2])
def test_predict_default_batches_cover_every_image(threads: int, kind: str, monkeypatch) -> None:
    """The CPU default (PREDICT_BATCH_SIZE) on 2.5 batches' worth of images: two full
    batches and a half one, on one thread or spread over two (a worker process or
    thread); every output within the forward error bound of the float64 forward, and
    the same bits on one core or two."""
    from dualconv.model import PREDICT_BATCH_SIZE
    monkeypatch.setenv("DUALCONV_WORKERS", kind)
    from dualconv import set_num_threads
    size = PREDICT_BATCH_SIZE["numpy"]
    model = lenet(seed=1)
    x = randn((2 * size + size // 2, 1, 28, 28), 8)
    set_num_threads(threads)
    try:
        got = model.predict(x)
    finally:
        set_num_threads(None)
    assert got.shape == (len(x), 10)
    assert_within(got, exact_forward(model, x), forward_error_bound(model, x), "predict: ")
    set_num_threads(1)
    try:
        assert_array_equal(model.predict(x), got)
    finally:
        set_num_threads(None)


def test_seed_gives_identical_initial_weights() -> None:
    x = randn((1, 1, 28, 28))
    a, b, c = lenet(seed=7), lenet(seed=7), lenet(seed=8)
    for m in (a, b, c):
        m.build(x.shape)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for name in sa:
        assert_array_equal(sa[name], sb[name])
    assert not np.array_equal(sa["0.Conv2D.weight"], sc["0.Conv2D.weight"])


# -- float64 end to end ---------------------------------------------------------------

def test_float64_model_trains_with_float64_gradients() -> None:
    model = lenet(seed=0, dtype=np.float64)
    opt = dc.SGD(model.parameters(), lr=0.1)
    loss = dc.SoftmaxCrossEntropy()
    x = randn((4, 1, 28, 28), 7, np.float64)
    y = np.array([0, 1, 2, 3])
    out = model.forward(x)
    assert out.dtype == np.float64
    first = float(loss.forward(out, y))
    gx = model.backward(loss.backward())
    assert gx.dtype == np.float64
    before = model.state_dict()
    for p in model.parameters():
        assert p.data.dtype == np.float64 and p.grad.dtype == np.float64, p.name
    opt.step()
    for p in model.parameters():
        assert p.data.dtype == np.float64
        # w - lr * g: the product and the difference round once each (lr itself may round once more)
        step = 0.1 * np.abs(p.grad)
        assert_within(p.data, before[p.name] - 0.1 * p.grad,
                      4 * unit_roundoff(np.float64) * (np.abs(before[p.name]) + 2 * step), p.name)
    assert float(loss.forward(model.forward(x), y)) < first


# -- initializers ------------------------------------------------------------------------

@pytest.mark.parametrize("init, std", [
    (glorot_normal, lambda fi, fo: np.sqrt(2 / (fi + fo))),
    (glorot_uniform, lambda fi, fo: np.sqrt(6 / (fi + fo)) / np.sqrt(3)),
    (he_normal, lambda fi, fo: np.sqrt(2 / fi)),
    (he_uniform, lambda fi, fo: np.sqrt(6 / fi) / np.sqrt(3)),
], ids=["glorot_normal", "glorot_uniform", "he_normal", "he_uniform"])
@pytest.mark.parametrize("shape, fans", [((800, 300), (800, 300)), ((64, 32, 3, 3), (32 * 9, 64 * 9))],
                         ids=["dense", "conv"])
def test_initializer_std(init, std, shape, fans) -> None:
    w = init(shape, np.random.default_rng(0))
    assert w.shape == shape
    assert abs(w.mean()) < 0.05 * std(*fans)
    assert w.std() == pytest.approx(std(*fans), rel=0.02)


@pytest.mark.parametrize("name, std", [("glorot", np.sqrt(2 / (500 + 400))), ("he", np.sqrt(2 / 500))])
def test_layers_use_their_weight_init(name, std) -> None:
    model = dc.Sequential([dc.Dense(500, 400, weight_init=name)], seed=0)
    w = model.layers[0].params["weight"]
    assert w.std() == pytest.approx(std, rel=0.02)
    assert not model.layers[0].params["bias"].any()  # biases start at zero
    conv = dc.Conv2D(40, 50, 3, weight_init=name)
    fan_in, fan_out = 40 * 9, 50 * 9
    want = np.sqrt(2 / (fan_in + fan_out)) if name == "glorot" else np.sqrt(2 / fan_in)
    assert conv.params["weight"].std() == pytest.approx(want, rel=0.03)


def test_unknown_initializer_is_rejected() -> None:
    with pytest.raises(ValueError, match="initializer"):
        dc.Dense(3, 2, weight_init="xavier_magic")


@pytest.mark.parametrize("pool", [(2,), (3, 2, 1), ((2, 3),)])
@pytest.mark.parametrize("kind", ["ties", "nan"])
def test_relu_then_max_pool_runs_pooled_first_with_the_same_results(pool: tuple, kind: str) -> None:
    """Sequential runs a ReLU that precedes a MaxPool2D after the pooling
    (model.run_order). Oracle: the same layers run one by one in the listed
    order. Inputs full of ties (small integers, so ReLU makes many zeros) or
    NaN; outputs, parameter gradients and the input gradient must be equal."""
    rng = np.random.default_rng(7)
    model = dc.Sequential([dc.Conv2D(2, 3, 1, bias=False), dc.ReLU(), dc.MaxPool2D(*pool), dc.Flatten(),
                           dc.Dense(None, 4)],
                          seed=0, dtype=np.float64)
    model.build((3, 2, 7, 8))
    conv = model.layers[0]
    conv.params["weight"][...] = rng.integers(-1, 2, conv.params["weight"].shape)  # integer outputs: ties
    x = rng.integers(-2, 3, (3, 2, 7, 8)).astype(np.float64)
    if kind == "nan":
        x[rng.random(x.shape) < 0.1] = np.nan
    y = model.forward(x)
    assert [type(layer) for layer in model._run_order[:3]] == [dc.Conv2D, dc.MaxPool2D, dc.ReLU]
    gy = rng.integers(-3, 4, y.shape).astype(np.float64)
    gx = model.backward(gy)

    twins = copy.deepcopy(model.layers)
    h = x
    for layer in twins:
        h = layer.forward(h)
    assert_array_equal(y, h)
    g = gy
    for layer in reversed(twins):
        g = layer.backward(g)
    assert_array_equal(gx, g)
    for mine, theirs in zip(model.layers, twins):
        for key in mine.grads:
            assert_array_equal(mine.grads[key], theirs.grads[key], err_msg=f"{mine.name}.{key}")
