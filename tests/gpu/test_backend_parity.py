"""Every layer, loss and a LeNet training run on CuPy against the NumPy path.

Runs on a GPU when one is usable, else on the emulated CuPy (see conftest.py);
the kernels' own bitwise parity is in test_kernel_parity.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import dualconv as dc
from dualconv.backend import asnumpy, to_backend
from dualconv.models import lenet
from digits_28 import digits_28

pytestmark = pytest.mark.gpu

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def layer_cases():
    return [
        ("conv", lambda: dc.Conv2D(3, 4, 3, padding=1), (2, 3, 9, 8)),
        ("conv-strided-dilated", lambda: dc.Conv2D(3, 5, (3, 2), stride=2, padding=(2, 1), dilation=(2, 1)), (2, 3, 11, 10)),
        ("conv-same", lambda: dc.Conv2D(2, 3, 5, padding="same"), (2, 2, 7, 7)),
        ("dense", lambda: dc.Dense(12, 5), (4, 12)),
        ("maxpool-overlap", lambda: dc.MaxPool2D(3, 2, padding=1), (2, 3, 9, 9)),
        ("avgpool", lambda: dc.AvgPool2D(2), (2, 3, 8, 8)),
        ("flatten", lambda: dc.Flatten(), (2, 3, 4, 4)),
        ("relu", lambda: dc.ReLU(), (3, 7)),
        ("leaky", lambda: dc.LeakyReLU(0.1), (3, 7)),
        ("tanh", lambda: dc.Tanh(), (3, 7)),
        ("hardtanh", lambda: dc.HardTanh(), (3, 7)),
        ("sigmoid", lambda: dc.Sigmoid(), (3, 7)),
        ("softmax", lambda: dc.Softmax(), (3, 7)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,make,shape", layer_cases(), ids=[c[0] for c in layer_cases()])
def test_layer_forward_backward_matches_numpy(name, make, shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    cpu = make().astype(dtype)
    gpu = make().astype(dtype)
    for key, value in cpu.params.items():
        gpu.params[key] = value.copy()
    gpu.to("cupy")
    y_cpu = cpu.forward(x)
    y_gpu = gpu.forward(to_backend(x, "cupy"))
    assert_allclose(asnumpy(y_gpu), y_cpu, rtol=RTOL[dtype], atol=RTOL[dtype])
    gy = rng.standard_normal(y_cpu.shape).astype(dtype)
    gx_cpu = cpu.backward(gy)
    gx_gpu = gpu.backward(to_backend(gy, "cupy"))
    assert_allclose(asnumpy(gx_gpu), gx_cpu, rtol=RTOL[dtype], atol=RTOL[dtype])
    for key in cpu.grads:
        assert_allclose(asnumpy(gpu.grads[key]), cpu.grads[key], rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss_case", ["softmax-ce", "bce", "bce-logits", "mse"])
def test_loss_matches_numpy(loss_case, dtype):
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((6, 4)).astype(dtype)
    if loss_case == "softmax-ce":
        make, target = dc.SoftmaxCrossEntropy, rng.integers(0, 4, 6)
    elif loss_case == "bce":
        make, pred, target = dc.BinaryCrossEntropy, 1 / (1 + np.exp(-pred)), rng.integers(0, 2, (6, 4)).astype(dtype)
    elif loss_case == "bce-logits":
        make, target = (lambda: dc.BinaryCrossEntropy(from_logits=True)), rng.integers(0, 2, (6, 4)).astype(dtype)
    else:
        make, target = dc.MeanSquaredError, rng.standard_normal((6, 4)).astype(dtype)
    cpu, gpu = make(), make()
    v_cpu = cpu.forward(pred, target)
    v_gpu = gpu.forward(to_backend(pred, "cupy"), to_backend(target, "cupy"))
    assert_allclose(float(v_gpu), float(v_cpu), rtol=RTOL[dtype])
    assert_allclose(asnumpy(gpu.backward()), cpu.backward(), rtol=RTOL[dtype], atol=RTOL[dtype])


def test_lenet_50_steps_same_losses_on_both_backends():
    X, y = digits_28(50 * 16)
    losses = {}
    for backend in ("numpy", "cupy"):
        with dc.use_backend(backend):
            model = lenet(seed=3)
            model.build((1, 1, 28, 28))
            trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                                 dc.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False)
            steps = []
            for i in range(50):
                xb = to_backend(X[i * 16:(i + 1) * 16], backend)
                yb = to_backend(y[i * 16:(i + 1) * 16], backend)
                value, _ = trainer.train_step(xb, yb)
                steps.append(float(value))
            losses[backend] = np.array(steps)
    assert_allclose(losses["cupy"], losses["numpy"], rtol=0, atol=1e-4)


def test_trainer_fit_on_gpu_then_saved_model_predicts_the_same_on_cpu(tmp_path):
    X, y = digits_28(600)
    with dc.use_backend("cupy"):
        model = lenet(seed=0)
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                             dc.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False)
        history = trainer.fit(X, y, epochs=2, batch_size=32, seed=0)
        assert history["accuracy"][-1] > 0.5
        gpu_classes = model.predict_classes(X[:200])
        model.save(tmp_path / "m.npz")
    cpu_model = dc.Sequential.load(tmp_path / "m.npz", backend="numpy")
    assert_array_equal(cpu_model.predict_classes(X[:200]), gpu_classes)


def test_model_and_optimizer_state_move_between_backends():
    X, y = digits_28(64)
    model = lenet(seed=1)
    opt = dc.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), opt, progress=False)
    trainer.train_step(X[:32], y[:32])
    model.to("cupy")
    trainer.train_step(to_backend(X[32:], "cupy"), to_backend(y[32:], "cupy"))
    for p in model.parameters():
        assert type(p.data).__module__.startswith("cupy")
        assert type(opt.state[p.name]["velocity"]).__module__.startswith("cupy")
    model.to("numpy")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
