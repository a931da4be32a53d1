"""The CuPy path around the kernels: host data, Dropout, Adam, checkpoints, moves, predict,
evaluate, and (under the emulated CuPy) what a training step costs on the device."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.backend import asnumpy, backend_of, to_backend
from dualconv.checkpoint import load_checkpoint, save_checkpoint
from dualconv.models import lenet, weidman
from dualconv.shapes import Window
from digits_28 import digits_28
from error_bounds import assert_within, forward_error_bound
from layer_error_bounds import assert_step_layer_by_layer, cross_entropy_loss_bound
from near_ties import near_ties

pytestmark = pytest.mark.gpu


def _trainer(model, optimizer: str = "sgd", lr: float | None = None) -> dc.Trainer:
    if optimizer == "sgd":
        opt = dc.SGD(model.parameters(), lr=lr or 0.05, momentum=0.9)
    else:
        opt = dc.Adam(model.parameters(), lr=lr or 1e-3)
    return dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, progress=False)


def _weights(model) -> dict[str, np.ndarray]:
    return model.state_dict()


def test_train_step_with_host_batches_equals_device_batches():
    X, y = digits_28(64, seed=0)
    results = []
    for move in (False, True):
        with dc.use_backend("cupy"):
            model = lenet(seed=2)
            trainer = _trainer(model)
            for i in range(2):
                xb, yb = X[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]
                if move:
                    xb, yb = to_backend(xb, "cupy"), to_backend(yb, "cupy")
                loss, correct = trainer.train_step(xb, yb)  # host labels once crashed here
                assert backend_of(loss) == "cupy" and backend_of(correct) == "cupy"
        results.append((float(loss), int(correct), _weights(model)))
    (l0, c0, w0), (l1, c1, w1) = results
    assert (l0, c0) == (l1, c1)
    for name in w0:
        assert_array_equal(w0[name], w1[name])


def test_fit_with_the_data_kept_on_the_host(monkeypatch):
    """When the data set does not fit the device, batches move one by one: same result."""
    import cupy
    X, y = digits_28(96, seed=0)
    histories, weights = [], []
    for free in (None, 0):
        if free is not None:
            monkeypatch.setattr(cupy.cuda.runtime, "memGetInfo", lambda: (free, 1 << 30))
        with dc.use_backend("cupy"):
            model = lenet(seed=4)
            trainer = _trainer(model)
            histories.append(trainer.fit(X, y, epochs=2, batch_size=32, seed=5))
        weights.append(_weights(model))
    assert histories[0]["loss"] == histories[1]["loss"]
    for name in weights[0]:
        assert_array_equal(weights[0][name], weights[1][name])


def test_dropout_masks_are_the_same_on_both_backends():
    x = np.random.default_rng(0).standard_normal((16, 200)).astype(np.float32)
    outs = []
    for backend in ("numpy", "cupy"):
        layer = dc.Dropout(0.3).to(backend)
        layer.seed([7, 1, 3])
        outs.append([asnumpy(layer.forward(to_backend(x, backend))) for _ in range(2)])
    assert_array_equal(outs[0][0], outs[1][0])
    assert_array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0], outs[0][1])  # the step counter moves the mask on
    dropped = (outs[0][0] == 0).mean()
    assert abs(dropped - 0.3) < 4 * np.sqrt(0.3 * 0.7 / x.size)


def test_dropout_model_trains_the_same_on_both_backends():
    """weidman (conv, tanh, Dropout) for 8 steps. Before each, the CuPy model takes the NumPy
    model's state; the step is compared layer by layer, each layer within its one-layer
    bound (layer_error_bounds.assert_step_layer_by_layer): the same Dropout masks on both."""
    X, y = digits_28(128, seed=0)
    models = {}
    for backend in ("numpy", "cupy"):
        with dc.use_backend(backend):
            models[backend] = weidman(seed=1)
            models[backend].build((1, 1, 28, 28))
            models[backend].seed_randomness(3)
            models[backend].train()
    optimizer = dc.Adam(models["numpy"].parameters(), lr=1e-3)
    for i in range(0, 128, 16):
        models["cupy"].load_state_dict(models["numpy"].state_dict())
        assert_step_layer_by_layer(models["numpy"], models["cupy"], X[i:i + 16], y[i:i + 16])
        optimizer.step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_from_a_checkpoint_on_the_gpu_is_bitwise(tmp_path, optimizer):
    X, y = digits_28(96, seed=0)

    def run(epochs, start=0, state=None):
        with dc.use_backend("cupy"):
            model = weidman(seed=6)
            trainer = _trainer(model, optimizer)
            model.build(X[:1].shape)
            if state is not None:
                trainer.load_state_dict(state.state)
            trainer.fit(X, y, epochs=epochs, batch_size=32, seed=9, initial_epoch=start)
        return model, trainer

    straight, _ = run(3)
    first, trainer = run(2)
    save_checkpoint(tmp_path / "c.npz", trainer.state_dict(), epoch=2, history={})
    resumed, _ = run(3, start=2, state=load_checkpoint(tmp_path / "c.npz"))
    for name, value in _weights(straight).items():
        assert_array_equal(_weights(resumed)[name], value)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_model_to_round_trips_carry_the_optimizer_state(optimizer):
    """numpy -> cupy -> numpy between steps: each move carries the weights and the optimizer's
    slots bit for bit, and the slots follow the model to its backend at the next step."""
    X, y = digits_28(96, seed=0)
    batches = [(X[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]) for i in range(3)]
    model = lenet(seed=8)
    trainer = _trainer(model, optimizer)
    for backend, (xb, yb) in zip(("numpy", "cupy", "numpy"), batches):
        weights, slots = _weights(model), trainer.optimizer.state_dict()["state"]
        model.to(backend)
        for name, value in weights.items():
            assert_array_equal(_weights(model)[name], value)
        moved = trainer.optimizer.state_dict()["state"]
        for key, slot in slots.items():
            for name, value in slot.items():
                assert_array_equal(moved[key][name], value)
        trainer.train_step(xb, yb)
        assert {backend_of(v) for s in trainer.optimizer.state.values() for v in s.values()} == {backend}
    assert model.backend == "numpy"
    state = trainer.optimizer.state_dict()
    assert all(isinstance(v, np.ndarray) for s in state["state"].values() for v in s.values())


def test_predict_and_evaluate_on_the_gpu_take_host_or_device_data(gpu):
    """Accuracy equal to the CPU's but for samples whose logits are near-ties (near_ties.py:
    a GPU sums in its own order); equal under the emulated CuPy."""
    X, y = digits_28(300, seed=0)
    cpu = lenet(seed=3)
    _trainer(cpu).fit(X, y, epochs=1, batch_size=32, seed=0)
    gpu = lenet(seed=3)
    gpu.build(X[:1].shape)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cupy")
    host_out = gpu.predict(X, batch_size=128)
    device_out = gpu.predict(to_backend(X, "cupy"), batch_size=128)
    assert backend_of(host_out) == "numpy" and backend_of(device_out) == "cupy"
    assert_array_equal(asnumpy(device_out), host_out)
    # each side's logits within forward_error_bound of the exact ones (error_bounds.py)
    bound = forward_error_bound(cpu, X)
    assert_within(host_out, cpu.predict(X), 2 * bound)
    ties = int(near_ties(cpu.predict(X), bound).sum())
    expected = _trainer(cpu).evaluate(X, y)
    loss_bound = cross_entropy_loss_bound(cpu, X, y)
    for data in ((X, y), (to_backend(X, "cupy"), to_backend(y, "cupy"))):
        result = _trainer(gpu).evaluate(*data)
        assert abs(result["accuracy"] - expected["accuracy"]) * len(X) <= ties
        if gpu is not None:
            assert result["accuracy"] == expected["accuracy"]
        assert_within(result["loss"], expected["loss"], loss_bound)


def test_a_layer_given_an_array_from_the_other_backend_names_both():
    import cupy
    conv = dc.Conv2D(1, 2, 3).to("cupy")
    with pytest.raises(TypeError, match=r"Conv2D: .*input is a numpy array and the parameters are on cupy"):
        conv.forward(np.zeros((1, 1, 5, 5), np.float32))
    dense = dc.Dense(4, 2)
    with pytest.raises(TypeError, match=r"Dense: .*input is a cupy array and the parameters are on numpy"):
        dense.forward(cupy.zeros((3, 4), dtype=cupy.float32))


def test_float32_subnormals_are_flushed_by_the_kernels():
    """The kernel contract's exception (kernels/common.cuh): CuPy compiles with -ftz=true,
    so float32 subnormals read as zero in kernel arithmetic; float64 keeps them."""
    import cupy

    from dualconv.kernels import cpu, cuda
    emulated = getattr(cupy, "_dualconv_emulated", False)
    if emulated and not cuda.get_module()._library().flushes_subnormals:
        pytest.skip("no flush-to-zero control on this CPU")
    win = Window(2, 2, 2, 2, 0, 0)
    x = np.full((1, 1, 2, 2), 4e-39, np.float32)  # below float32's smallest normal, 1.18e-38
    on_cpu = cpu.avg_pool_forward(x, win)
    assert on_cpu[0, 0, 0, 0] != 0                 # NumPy keeps the subnormal mean
    on_gpu = cuda.avg_pool_forward(cupy.asarray(x), win)
    assert_array_equal(cupy.asnumpy(on_gpu), np.zeros_like(on_cpu))
    x64 = x.astype(np.float64) * 1e-270            # subnormal in float64 too
    assert_array_equal(cupy.asnumpy(cuda.avg_pool_forward(cupy.asarray(x64), win)),
                       cpu.avg_pool_forward(x64, win))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_step_with_resident_data_transfers_and_syncs_nothing(emu, optimizer):
    X, y = digits_28(64 * 4, seed=0)
    with dc.use_backend("cupy"):
        model = lenet(seed=0)
        trainer = _trainer(model, optimizer)
        step = trainer.train_step
        counts = []

        def counted(xb, yb):
            before = dict(emu.counters)
            out = step(xb, yb)
            counts.append({k: emu.counters[k] - before[k] for k in before})
            return out
        trainer.train_step = counted
        trainer.fit(X, y, epochs=1, batch_size=64, seed=0)
    assert len(counts) == 4
    for c in counts:
        assert c["host_to_device"] == 0 and c["device_to_host"] == 0 and c["syncs"] == 0, c
    assert counts[1] == counts[2] == counts[3]  # steady state (the first step allocates slots)
    assert counts[1]["kernel_launches"] > 0


def test_kernel_functions_are_looked_up_once_per_device(emu, monkeypatch):
    import cupy

    from dualconv.kernels import cuda
    monkeypatch.setattr(cuda, "_functions", {})
    module = cuda.get_module()
    looked_up = []
    original = module.get_function
    monkeypatch.setattr(module, "get_function", lambda name: looked_up.append(name) or original(name))
    x = cupy.zeros((2, 1, 6, 6), dtype=cupy.float32)
    for _ in range(3):
        cuda.im2col(x, Window(3, 3, 1, 1, 0, 0))
    assert looked_up == ["im2col<float, int>"]
