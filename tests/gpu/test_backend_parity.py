"""Every layer, loss and a LeNet training run on CuPy against the NumPy path.

Runs on a GPU when one is usable, else on the emulated CuPy (see conftest.py);
the kernels' own bitwise parity is in test_kernel_parity.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.backend import asnumpy, to_backend
from dualconv.models import lenet
from digits_28 import digits_28
from error_bounds import assert_within, forward_error_bound
from layer_error_bounds import cross_entropy_loss_bound, layer_bounds, loss_bounds
from near_ties import assert_classes_agree_but_at_near_ties

pytestmark = pytest.mark.gpu

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
def test_layer_forward_backward_matches_numpy(name, make, shape, dtype, gpu):
    """Each side within its derived bound (layer_error_bounds.py), so the two within twice it.

    Under the emulated CuPy (``gpu`` is its handle) the layer makes the same NumPy calls
    on arrays of the same shapes and memory orders as the CPU path (a convolution's GEMM
    is one call on both here: its blocks on the CPU span at least 1024 columns, and
    these have at most 144), so the results are bitwise equal as well.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    cpu = make().astype(dtype)
    gpu_layer = make().astype(dtype)
    for key, value in cpu.params.items():
        gpu_layer.params[key] = value.copy()
    gpu_layer.to("cupy")
    y_cpu = cpu.forward(x)
    y_gpu = asnumpy(gpu_layer.forward(to_backend(x, "cupy")))
    gy = rng.standard_normal(y_cpu.shape).astype(dtype)
    bounds = layer_bounds(cpu, x, gy)
    gx_cpu = cpu.backward(gy)
    gx_gpu = asnumpy(gpu_layer.backward(to_backend(gy, "cupy")))
    pairs = [("y", y_gpu, y_cpu), ("gx", gx_gpu, gx_cpu)]
    pairs += [(f"grad:{k}", asnumpy(gpu_layer.grads[k]), cpu.grads[k]) for k in cpu.grads]
    for what, on_gpu, on_cpu in pairs:
        assert_within(on_gpu, on_cpu, 2 * bounds[what], f"{name} {what}: ")
        if gpu is not None:
            assert_array_equal(on_gpu, on_cpu, err_msg=f"{name} {what}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss_case", ["softmax-ce", "bce", "bce-logits", "mse"])
def test_loss_matches_numpy(loss_case, dtype):
    """Value and gradient within the derived bounds on their difference (layer_error_bounds.py)."""
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
    value_bound, grad_bound = loss_bounds(loss_case, pred, target)
    assert_within(float(v_gpu), float(v_cpu), value_bound, "loss value: ")
    assert_within(asnumpy(gpu.backward()), cpu.backward(), grad_bound, "loss gradient: ")


def test_lenet_steps_from_a_shared_state_lose_the_same_on_both_backends():
    """50 SGD steps of LeNet. Before each, the CuPy trainer takes the NumPy trainer's state
    (weights and velocities), so the two losses of a step differ by that step's rounding
    only: within the bound carried from the logits' forward error through the loss
    (layer_error_bounds.cross_entropy_loss_bound). Gradients are compared per layer above,
    and the updates per kernel in tests/cuda."""
    X, y = digits_28(50 * 16)
    trainers = {}
    for backend in ("numpy", "cupy"):
        with dc.use_backend(backend):
            model = lenet(seed=3)
            model.build((1, 1, 28, 28))
            trainers[backend] = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                                           dc.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False)
    for i in range(50):
        xb, yb = X[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]
        trainers["cupy"].load_state_dict(trainers["numpy"].state_dict())
        bound = cross_entropy_loss_bound(trainers["numpy"].model, xb, yb)
        on_cpu = float(trainers["numpy"].train_step(xb, yb)[0])
        on_gpu = float(trainers["cupy"].train_step(to_backend(xb, "cupy"), to_backend(yb, "cupy"))[0])
        assert_within(on_gpu, on_cpu, bound, f"step {i}: ")


def test_trainer_fit_on_gpu_then_saved_model_predicts_the_same_on_cpu(tmp_path, gpu):
    """The same classes, but at near-ties of the logits (near_ties.py): a GPU sums in
    its own order. Under the emulated CuPy the classes are equal."""
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
    logits = cpu_model.predict(X[:200])
    assert_classes_agree_but_at_near_ties(gpu_classes, logits, forward_error_bound(cpu_model, X[:200]))
    if gpu is not None:
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


@pytest.mark.parametrize("name", ["lenet", "weidman"])
def test_an_empty_batch_goes_forward_and_back_on_the_gpu(name):
    """A batch of no images on CuPy: outputs (0, 10) and an input gradient (0, 1, 28, 28)
    on the device, every parameter's gradient zero, as on NumPy (tests/test_model.py)."""
    import cupy

    model = getattr(dc.models, name)(seed=0)
    model.build((1, 1, 28, 28))
    model.to("cupy")
    out = model.forward(cupy.zeros((0, 1, 28, 28), np.float32))
    gx = model.backward(cupy.zeros((0, 10), np.float32), input_grad=True)
    assert isinstance(out, cupy.ndarray) and out.shape == (0, 10)
    assert isinstance(gx, cupy.ndarray) and gx.shape == (0, 1, 28, 28)
    for layer in model.layers:
        for key, grad in layer.grads.items():
            assert grad.shape == layer.params[key].shape
            assert not asnumpy(grad).any(), f"{layer.name}.{key}"


def test_near_ties_are_the_samples_whose_class_two_computations_can_disagree_on():
    from near_ties import near_ties
    z = np.array([[1.0, 0.5, 0.0], [1.0, 0.9, 0.0], [0.0, 0.0, 2.0], [3.0, 3.0, 0.0]])
    d = np.full_like(z, 0.03)  # classes within 0.12 of the top one can swap
    assert near_ties(z, d).tolist() == [False, True, False, True]
