"""SGD and Adam against hand-written update formulas; LR schedules; optimizer state."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import dualconv as dc
from dualconv.optim import Parameter

W0 = np.array([0.5, -1.0, 2.0])
GRADS = [np.array([0.1, -0.3, 0.2]), np.array([-0.2, 0.4, 0.0]), np.array([0.3, 0.1, -0.5]),
         np.array([0.05, -0.05, 0.25])]


class Holder:
    """The smallest thing a Parameter can point at: params and grads dicts."""

    def __init__(self, w: np.ndarray) -> None:
        self.params = {"w": w.copy()}
        self.grads: dict[str, np.ndarray] = {}


def run(make_opt, grads=GRADS, w0=W0) -> list[np.ndarray]:
    """Weights after each step of an optimizer fed ``grads``."""
    holder = Holder(w0)
    opt = make_opt([Parameter(holder, "w", "w")])
    out = []
    for g in grads:
        holder.grads["w"] = g.copy()
        opt.step()
        out.append(holder.params["w"].copy())
    return out


# -- SGD ---------------------------------------------------------------------------

def sgd_reference(lr, momentum=0.0, nesterov=False, weight_decay=0.0) -> list[np.ndarray]:
    """PyTorch's SGD written out: g += wd w; v = m v + g; w -= lr (g + m v if nesterov else v)."""
    w, v, out = W0.copy(), np.zeros(3), []
    for g in GRADS:
        g = g + weight_decay * w
        if momentum:
            v = momentum * v + g
            step = g + momentum * v if nesterov else v
        else:
            step = g
        w = w - lr * step
        out.append(w.copy())
    return out


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.1, momentum=0.9, weight_decay=0.1),
    dict(lr=0.2, momentum=0.5, nesterov=True, weight_decay=0.05),
], ids=["plain", "momentum", "nesterov", "wd", "momentum-wd", "nesterov-wd"])
def test_sgd_matches_formula(kwargs: dict) -> None:
    got = run(lambda ps: dc.SGD(ps, **kwargs))
    for step, (a, b) in enumerate(zip(got, sgd_reference(**kwargs))):
        assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=f"step {step + 1}")


def test_sgd_first_steps_by_hand() -> None:
    """lr 0.1, momentum 0.9, w = 1, g = 1 then 1: v1 = 1, w1 = 0.9; v2 = 1.9, w2 = 0.71."""
    got = run(lambda ps: dc.SGD(ps, lr=0.1, momentum=0.9), grads=[np.ones(1), np.ones(1)], w0=np.ones(1))
    assert_allclose([w[0] for w in got], [0.9, 0.71], rtol=1e-12)
    # nesterov: step1 = g + 0.9 * 1 = 1.9 -> 0.81; v2 = 1.9, step2 = 1 + 0.9 * 1.9 = 2.71 -> 0.539
    got = run(lambda ps: dc.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
              grads=[np.ones(1), np.ones(1)], w0=np.ones(1))
    assert_allclose([w[0] for w in got], [0.81, 0.539], rtol=1e-12)


def test_sgd_updates_in_place_and_skips_parameters_without_gradient() -> None:
    a, b = Holder(W0), Holder(W0)
    live = a.params["w"]
    opt = dc.SGD([Parameter(a, "w", "a"), Parameter(b, "w", "b")], lr=0.5)
    a.grads["w"] = np.ones(3)
    opt.step()
    assert a.params["w"] is live  # the layer's own array was updated
    assert_allclose(live, W0 - 0.5)
    assert_array_equal(b.params["w"], W0)


@pytest.mark.parametrize("kwargs", [dict(lr=0.0), dict(lr=-1.0), dict(lr=0.1, momentum=1.0),
                                    dict(lr=0.1, nesterov=True)])
def test_sgd_rejects_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="SGD"):
        dc.SGD([Parameter(Holder(W0), "w", "w")], **kwargs)


# -- Adam ----------------------------------------------------------------------------

def adam_reference(grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, w0=W0) -> list[np.ndarray]:
    """Adam as documented (Kingma & Ba; PyTorch's form):
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);  w -= lr m_hat / (sqrt(v_hat) + eps).
    """
    b1, b2 = betas
    w, m, v, out = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), []
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w.copy())
    return out


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1),
    dict(lr=0.01, betas=(0.8, 0.99)),
    dict(lr=0.05, weight_decay=0.1),
], ids=["default", "betas", "wd"])
def test_adam_matches_formula(kwargs: dict) -> None:
    got = run(lambda ps: dc.Adam(ps, **kwargs))
    for step, (a, b) in enumerate(zip(got, adam_reference(GRADS, **kwargs))):
        # eps = 1e-8 against gradients ~0.1: where eps sits changes ~1e-6 relative
        assert_allclose(a, b, rtol=1e-5, err_msg=f"step {step + 1}")


def test_adam_first_step_is_lr_times_sign() -> None:
    """At t = 1, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps) ~ lr * sign(g)."""
    got = run(lambda ps: dc.Adam(ps, lr=0.1, eps=1e-12), grads=[GRADS[0]])
    assert_allclose(got[0], W0 - 0.1 * np.sign(GRADS[0]), rtol=1e-9)


def test_adam_eps_as_documented_with_small_gradients() -> None:
    """Gradients of 1e-6 against eps = 1e-6: the documented step is lr * 1e-6 / (1e-6 + 1e-6) = lr / 2.

    Regression: Adam once folded the bias corrections into one step size,
    lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), which scales eps up by
    1 / sqrt(1 - b2^t) (x31.6 at t = 1) and moved w by 0.0031 here instead of 0.05.
    """
    g = [np.full(1, 1e-6)] * 3
    got = run(lambda ps: dc.Adam(ps, lr=0.1, eps=1e-6), grads=g, w0=np.zeros(1))
    want = adam_reference(g, lr=0.1, eps=1e-6, w0=np.zeros(1))
    assert_allclose(want[0], [-0.05], rtol=1e-12)  # the oracle itself, worked by hand
    assert_allclose(np.concatenate(got), np.concatenate(want), rtol=1e-9)


# -- schedules -----------------------------------------------------------------------

def lr_sequence(schedule_cls, epochs, base_lr=0.1, **kwargs) -> list[float]:
    opt = dc.SGD([Parameter(Holder(W0), "w", "w")], lr=base_lr)
    sched = schedule_cls(opt, **kwargs)
    lrs = [opt.lr]
    for _ in range(epochs):
        sched.step()
        lrs.append(opt.lr)
    return lrs


def test_step_lr() -> None:
    lrs = lr_sequence(dc.StepLR, 7, step_size=3, gamma=0.5)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025], rel=1e-12)


def test_exponential_lr() -> None:
    lrs = lr_sequence(dc.ExponentialLR, 4, gamma=0.9)
    assert lrs == pytest.approx([0.1, 0.09, 0.081, 0.0729, 0.06561], rel=1e-12)


def test_linear_lr_decays_then_holds() -> None:
    lrs = lr_sequence(dc.LinearLR, 6, base_lr=0.1, final_lr=0.02, total_epochs=4)
    assert lrs == pytest.approx([0.1, 0.08, 0.06, 0.04, 0.02, 0.02, 0.02], rel=1e-12)


def test_schedule_sets_the_lr_the_next_step_uses() -> None:
    holder = Holder(np.zeros(1))
    opt = dc.SGD([Parameter(holder, "w", "w")], lr=1.0)
    sched = dc.StepLR(opt, step_size=1, gamma=0.1)
    holder.grads["w"] = np.ones(1)
    opt.step()
    sched.step()
    opt.step()
    assert_allclose(holder.params["w"], [-1.1], rtol=1e-12)


# -- optimizer state -----------------------------------------------------------------

def tiny_model(seed: int = 0) -> dc.Sequential:
    return dc.Sequential([dc.Dense(3, 4), dc.Tanh(), dc.Dense(4, 2)], seed=seed, dtype=np.float64)


def train_steps(model, opt, steps: int, start: int = 0) -> None:
    loss = dc.MeanSquaredError()
    for i in range(start, start + steps):
        rng = np.random.default_rng(100 + i)
        x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: dc.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: dc.Adam(ps, lr=0.01),
], ids=["sgd", "adam"])
def test_state_dict_round_trip_gives_identical_steps(make) -> None:
    """Checkpoint after 3 steps, train on; a fresh model + optimizer loaded from it repeat the next 3 steps."""
    a = tiny_model()
    opt_a = make(a.parameters())
    train_steps(a, opt_a, 3)
    model_state, opt_state = a.state_dict(), opt_a.state_dict()
    train_steps(a, opt_a, 3, start=3)

    b = tiny_model(seed=99)  # other initial weights, overwritten by the checkpoint
    opt_b = make(b.parameters())
    b.load_state_dict(model_state)
    opt_b.load_state_dict(opt_state)
    train_steps(b, opt_b, 3, start=3)
    for name, value in a.state_dict().items():
        assert_array_equal(b.state_dict()[name], value, err_msg=name)


@pytest.mark.parametrize("make", [
    lambda ps: dc.SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: dc.Adam(ps, lr=0.01),
], ids=["sgd", "adam"])
def test_state_dict_is_a_snapshot(make) -> None:
    """A saved optimizer state must not change when training goes on.

    Regression: state_dict() once returned the live state arrays (on NumPy, asnumpy
    does not copy), so an in-memory checkpoint's momentum / moments moved on with
    every later step.
    """
    model = tiny_model()
    opt = make(model.parameters())
    train_steps(model, opt, 2)
    saved = opt.state_dict()
    frozen = {n: {k: np.array(v, copy=True) for k, v in s.items()} for n, s in saved["state"].items()}
    train_steps(model, opt, 2, start=2)
    for name, slots in frozen.items():
        for key, value in slots.items():
            assert_array_equal(saved["state"][name][key], value, err_msg=f"{name} {key}")


def test_loaded_state_is_not_shared_with_the_checkpoint() -> None:
    """An optimizer loaded from a checkpoint must not share its state arrays.

    Regression: load_state_dict once kept the checkpoint's arrays (dict(slots)), so
    the loaded optimizer's steps changed the checkpoint.
    """
    source = tiny_model()
    opt = dc.SGD(source.parameters(), lr=0.05, momentum=0.9)
    train_steps(source, opt, 2)
    checkpoint = copy.deepcopy(opt.state_dict())
    frozen = copy.deepcopy(checkpoint)
    b = tiny_model()
    opt_b = dc.SGD(b.parameters(), lr=0.05, momentum=0.9)
    opt_b.load_state_dict(checkpoint)
    train_steps(b, opt_b, 1, start=2)
    for name, slots in frozen["state"].items():
        assert_array_equal(checkpoint["state"][name]["velocity"], slots["velocity"], err_msg=name)


def test_state_is_keyed_by_parameter_name_and_has_the_slots() -> None:
    model = tiny_model()
    opt = dc.Adam(model.parameters(), lr=0.01)
    train_steps(model, opt, 1)
    state = opt.state_dict()
    assert state["steps"] == 1 and state["lr"] == 0.01
    assert sorted(state["state"]) == sorted(p.name for p in model.parameters())
    for name, slots in state["state"].items():
        assert sorted(slots) == ["m", "v"]
        assert slots["m"].shape == model.state_dict()[name].shape


def test_optimizer_made_before_lazy_build_updates_the_parameters() -> None:
    model = dc.Sequential([dc.Dense(None, 3), dc.ReLU(), dc.Dense(None, 2)], seed=0, dtype=np.float64)
    opt = dc.SGD(model.parameters(), lr=0.1)
    assert len(opt.params) == 0  # nothing built yet
    x = np.random.default_rng(0).standard_normal((4, 5))
    loss = dc.MeanSquaredError()
    loss.forward(model.forward(x), np.ones((4, 2)))
    model.backward(loss.backward())
    before = model.state_dict()
    grads = {p.name: p.grad.copy() for p in model.parameters()}
    opt.step()
    after = model.state_dict()
    assert len(after) == 4
    for name in after:
        assert_allclose(after[name], before[name] - 0.1 * grads[name], rtol=1e-12, atol=1e-15)
        assert not np.array_equal(after[name], before[name]) or not grads[name].any()


def test_step_without_any_parameter_is_an_error() -> None:
    opt = dc.SGD(dc.Sequential([dc.Dense(None, 2)]).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no parameters"):
        opt.step()


def test_adam_bias_correction_uses_the_step_count() -> None:
    """Constant gradient g: m_hat = g and v_hat = g^2 at every t, so each step is lr * g / (|g| + eps)."""
    g = [np.full(1, 0.5)] * 5
    got = run(lambda ps: dc.Adam(ps, lr=0.01, eps=1e-12), grads=g, w0=np.zeros(1))
    assert_allclose(np.concatenate(got), -0.01 * np.arange(1, 6), rtol=1e-9)
    assert math.isclose(got[-1][0], -0.05, rel_tol=1e-9)


def test_a_velocity_replaced_in_the_state_is_the_one_the_next_step_updates() -> None:
    """The optimizer's state is read at every step: a slot array a user puts in its place
    (or a loaded state) is the one the next step reads and updates, not the one before."""
    holder = Holder(np.array([1.0, 2.0], np.float32))
    p = Parameter(holder, "w", "w")
    opt = dc.SGD([p], lr=0.5, momentum=0.5)
    for _ in range(3):
        holder.grads["w"] = np.ones(2, np.float32)
        opt.step()
    replaced = np.array([4.0, 8.0], np.float32)
    opt.state["w"]["velocity"] = replaced
    before = p.data.copy()
    opt.step()
    assert_array_equal(replaced, np.array([3.0, 5.0], np.float32))  # 0.5 * v + g, in place
    assert_array_equal(p.data, before - 0.5 * np.array([3.0, 5.0], np.float32))


def test_an_optimizer_keeps_no_replaced_weight_or_state_alive() -> None:
    """What a step remembers of the last one holds none of its arrays: after a cast of the
    model and a reload of the optimizer's state, the old weights and velocities are freed."""
    import gc
    import weakref
    net = dc.Sequential([dc.Flatten(), dc.Dense(None, 3)], seed=0)
    net.build((2, 1, 2, 2))
    opt = dc.SGD(net.parameters(), lr=0.1, momentum=0.9)
    dense = net.layers[1]
    for _ in range(2):
        dense.grads = {k: np.ones_like(v) for k, v in dense.params.items()}
        opt.step()
    old = [weakref.ref(a) for a in (*dense.params.values(), *opt.state[next(iter(opt.state))].values())]
    net.astype(np.float64)
    opt.load_state_dict(opt.state_dict())
    dense.grads = {}
    gc.collect()
    assert [r() is None for r in old] == [True] * len(old)
