"""BatchNorm2D / BatchNorm1D: gradients, hand-worked numbers, running statistics, buffers, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import dualconv as dc
from dualconv.checkpoint import load_checkpoint, save_checkpoint
from dualconv.testing import check_layer_gradients
from error_bounds import assert_within, gamma

EPS64 = np.finfo(np.float64).eps

CASES = [  # (layer class, input shape)
    (dc.BatchNorm2D, (3, 2, 4, 5)),
    (dc.BatchNorm2D, (1, 3, 3, 3)),  # one image: statistics over H and W alone
    (dc.BatchNorm1D, (5, 4)),
    (dc.BatchNorm1D, (3, 2, 6)),
]


def _bn64(cls, shape, affine=True, seed=0):
    """A built float64 layer with non-trivial weight, bias and running statistics."""
    rng = np.random.default_rng(seed)
    layer = cls(shape[1], affine=affine).astype(np.float64)
    if affine:
        layer.params["weight"][...] = rng.uniform(0.5, 2.0, shape[1])
        layer.params["bias"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_mean"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, shape[1]).reshape(1, -1, *[1] * (len(shape) - 2)) + 1.5
    return layer, x


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls,shape", CASES, ids=[f"{c.__name__}-{len(s)}d-n{s[0]}" for c, s in CASES])
def test_gradients_match_finite_differences(cls, shape, mode, affine):
    layer, x = _bn64(cls, shape, affine)
    getattr(layer, mode)()
    check_layer_gradients(layer, x)


def test_batchnorm1d_hand_worked_train_then_eval():
    # One feature, batch [1, 3]: mean 2, biased variance 1, unbiased variance 2.
    layer = dc.BatchNorm1D(1).astype(np.float64)
    layer.params["weight"][...] = 2.0
    layer.params["bias"][...] = 0.5
    y = layer.forward(np.array([[1.0], [3.0]]))
    s = 1 / np.sqrt(1 + 1e-5)
    assert_allclose(y, [[0.5 - 2 * s], [0.5 + 2 * s]], rtol=4 * EPS64)
    # running = 0.9 * initial + 0.1 * batch: mean 0.9*0 + 0.1*2, variance 0.9*1 + 0.1*2
    assert_allclose(layer.buffers["running_mean"], [0.2], rtol=4 * EPS64)
    assert_allclose(layer.buffers["running_var"], [1.1], rtol=4 * EPS64)
    layer.eval()
    y = layer.forward(np.array([[1.2]]))  # a batch of one is fine in eval mode
    assert_allclose(y, [[(1.2 - 0.2) / np.sqrt(1.1 + 1e-5) * 2 + 0.5]], rtol=8 * EPS64)
    assert_allclose(layer.buffers["running_mean"], [0.2], rtol=0)  # eval leaves them alone


def test_batchnorm2d_hand_worked_per_channel():
    # Channel 0 holds 0, 2, 4, 6 (mean 3, biased var 5, unbiased 20/3); channel 1 is constant 7.
    x = np.array([[[[0.0, 2.0], [4.0, 6.0]], [[7.0, 7.0], [7.0, 7.0]]]])
    layer = dc.BatchNorm2D(2, eps=1e-3, momentum=0.5).astype(np.float64)
    layer.params["bias"][...] = [0.0, -1.0]
    y = layer.forward(x)
    assert_allclose(y[0, 0], np.array([[-3.0, -1.0], [1.0, 3.0]]) / np.sqrt(5 + 1e-3), rtol=8 * EPS64)
    assert_allclose(y[0, 1], -1.0, rtol=0)  # zero variance: x_hat = 0, y = bias
    assert_allclose(layer.buffers["running_mean"], [0.5 * 3, 0.5 * 0 + 0.5 * 7], rtol=4 * EPS64)
    assert_allclose(layer.buffers["running_var"], [0.5 + 0.5 * 20 / 3, 0.5], rtol=4 * EPS64)


def test_running_statistics_follow_a_naive_loop():
    """The loop sums in another order than NumPy, so the two differ by rounding only.

    Bounds, per channel and step, for the n = 24 values v with mean m (Higham's
    gamma(k) = k u / (1 - k u), error_bounds.py): each side's batch mean is within
    gamma(n + 1) sum|v| / n of the exact one (n terms, one division); each side's
    unbiased variance within gamma(n + 8) sum (v - m)^2 / (n - 1) plus n dm^2 / (n - 1)
    for a mean off by dm (the subtraction, square, sum, division and the n / (n - 1)
    scaling: fewer than n + 8 roundings). The update r' = 0.7 r + 0.3 b carries an
    earlier difference e to 0.7 e, adds 0.3 times the batch statistics' difference, and
    rounds its products and sum (0.7 against 1 - 0.3 included) within gamma(4) on each side.
    """
    rng = np.random.default_rng(3)
    layer = dc.BatchNorm2D(3, momentum=0.3).astype(np.float64)
    mean, var = np.zeros(3), np.ones(3)
    mean_bound, var_bound = np.zeros(3), np.zeros(3)
    for _ in range(4):
        x = rng.standard_normal((2, 3, 3, 4)) * 2 + rng.standard_normal(3).reshape(1, 3, 1, 1)
        layer.forward(x)
        for c in range(3):
            values = [x[n, c, i, j] for n in range(2) for i in range(3) for j in range(4)]
            n = len(values)
            m = sum(values) / n
            squares = [(v - m) ** 2 for v in values]
            unbiased = sum(squares) / (n - 1)
            dm = 2 * gamma(n + 1, np.float64) * sum(abs(v) for v in values) / n
            dvar = 2 * (gamma(n + 8, np.float64) * sum(squares) / (n - 1) + n * dm ** 2 / (n - 1))
            rounding = 2 * gamma(4, np.float64)
            mean_bound[c] = 0.7 * mean_bound[c] + 0.3 * dm + rounding * (0.7 * abs(mean[c]) + 0.3 * abs(m))
            var_bound[c] = 0.7 * var_bound[c] + 0.3 * dvar + rounding * (0.7 * var[c] + 0.3 * unbiased)
            mean[c] = 0.7 * mean[c] + 0.3 * m
            var[c] = 0.7 * var[c] + 0.3 * unbiased
    assert_within(layer.buffers["running_mean"], mean, mean_bound)
    assert_within(layer.buffers["running_var"], var, var_bound)


def test_float32_output_is_normalized_per_channel():
    x = np.random.default_rng(4).standard_normal((16, 3, 5, 5)).astype(np.float32) * 10 + 4
    y = dc.BatchNorm2D(None).forward(x)
    assert y.dtype == np.float32
    n = 16 * 5 * 5
    tol = 8 * n * np.finfo(np.float32).eps  # a length-n float32 sum of O(1) terms
    assert_allclose(y.mean(axis=(0, 2, 3), dtype=np.float64), 0.0, atol=tol)
    assert_allclose(y.var(axis=(0, 2, 3), dtype=np.float64), 1.0 / (1 + 1e-5 / x.var(axis=(0, 2, 3))), rtol=tol)


def test_lazy_and_eager_parameters():
    lazy = dc.BatchNorm2D()
    assert lazy.params == {} and lazy.buffers == {} and not lazy.built
    lazy.forward(np.ones((2, 5, 3, 3), np.float32))
    assert lazy.num_features == 5
    eager = dc.BatchNorm1D(7)
    assert eager.built and set(eager.params) == {"weight", "bias"}
    assert set(eager.buffers) == {"running_mean", "running_var"}
    assert all(v.shape == (5,) for v in (*lazy.params.values(), *lazy.buffers.values()))
    assert all(v.shape == (7,) for v in (*eager.params.values(), *eager.buffers.values()))
    assert dc.BatchNorm1D(3, affine=False).params == {}


def test_running_statistics_are_buffers_not_parameters():
    model = dc.Sequential([dc.Dense(4, 3), dc.BatchNorm1D(3), dc.ReLU()], seed=0)
    names = [p.name for p in model.parameters()]
    assert names == ["0.Dense.weight", "0.Dense.bias", "1.BatchNorm1D.weight", "1.BatchNorm1D.bias"]
    assert set(model.buffers()) == {"1.BatchNorm1D.running_mean", "1.BatchNorm1D.running_var"}
    opt = dc.SGD(model.parameters(), lr=0.1, weight_decay=0.5)  # decay would move anything it saw
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    model.forward(x)
    model.backward(np.ones((6, 3), np.float32))
    bn = model.layers[1]
    before = {k: v.copy() for k, v in bn.buffers.items()}
    opt.step()
    for k in before:
        assert_allclose(bn.buffers[k], before[k], rtol=0)


def _trained_bn_model():
    model = dc.models.lenet_bn(num_classes=3, seed=0)
    x = np.random.default_rng(1).standard_normal((4, 1, 12, 12)).astype(np.float32)
    model.forward(x)
    model.forward(x * 2 + 1)  # running statistics away from their initial 0 and 1
    return model.eval(), x


def test_buffers_in_state_dict_save_load_and_checkpoint(tmp_path):
    model, x = _trained_bn_model()
    state = model.state_dict()
    assert "1.BatchNorm2D.running_mean" in state and "10.BatchNorm1D.running_var" in state
    expected = model.predict(x)
    model.save(tmp_path / "m.npz")
    loaded = dc.Sequential.load(tmp_path / "m.npz")
    assert_allclose(loaded.predict(x), expected, rtol=0)
    for name, value in state.items():
        assert_allclose(loaded.state_dict()[name], value, rtol=0)
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.1), progress=False)
    save_checkpoint(tmp_path / "c.npz", trainer.state_dict(), epoch=1, history={})
    fresh = dc.models.lenet_bn(num_classes=3, seed=5)
    fresh.build((1, 1, 12, 12))
    fresh.load_state_dict(load_checkpoint(tmp_path / "c.npz").state["model"])
    assert_allclose(fresh.eval().predict(x), expected, rtol=0)


def test_buffers_follow_astype_and_to():
    model, x = _trained_bn_model()
    model.astype(np.float64).to("numpy")
    bn = model.layers[1]
    assert all(v.dtype == np.float64 and isinstance(v, np.ndarray) for v in bn.buffers.values())
    assert model.predict(x).dtype == np.float64


def test_load_state_dict_names_missing_buffers():
    model, _ = _trained_bn_model()
    state = model.state_dict()
    del state["1.BatchNorm2D.running_var"]
    with pytest.raises(ValueError, match=r"missing \['1.BatchNorm2D.running_var'\]"):
        model.load_state_dict(state)


def test_wrong_channel_count_names_the_layer():
    with pytest.raises(ValueError, match=r"BatchNorm2D: expected 3 channels \(axis 1\), got 4"):
        dc.BatchNorm2D(3).forward(np.ones((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1D: expected 3 channels \(axis 1\), got 2"):
        dc.BatchNorm1D(3).forward(np.ones((2, 2), np.float32))


def test_batch_of_one_in_training_mode_is_refused():
    layer = dc.BatchNorm1D(3)
    with pytest.raises(ValueError, match=r"BatchNorm1D: training mode needs more than one value per channel.*"
                                         r"\(1, 3\)"):
        layer.forward(np.ones((1, 3), np.float32))
    assert layer.eval().forward(np.ones((1, 3), np.float32)).shape == (1, 3)


def test_wrong_rank_and_bad_arguments():
    with pytest.raises(ValueError, match=r"BatchNorm2D: expected a 4-D input \(N, C, H, W\), got shape \(2, 3\)"):
        dc.BatchNorm2D().forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1D: expected a 2-D or 3-D input"):
        dc.BatchNorm1D().forward(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="BatchNorm2D: momentum must be in"):
        dc.BatchNorm2D(3, momentum=1.5)
    with pytest.raises(ValueError, match="BatchNorm1D: eps must be positive"):
        dc.BatchNorm1D(3, eps=0)
    with pytest.raises(ValueError, match="BatchNorm1D: num_features must be a positive int"):
        dc.BatchNorm1D(0)
