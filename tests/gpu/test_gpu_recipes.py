"""The two MNIST recipes (``dualconv train --model fast`` / ``--model best``: their network,
Nesterov SGD with weight decay, the one-cycle schedule stepped per batch, random shifts)
on the CuPy backend, step by step against the NumPy run of the same recipe.

Each step starts both sides from the NumPy side's state. The shifted batch is the same
bits on both (a shift copies pixels); the forward and backward agree layer by layer
within each layer's bound (layer_error_bounds.assert_step_layer_by_layer); the optimizer,
given the NumPy gradients, makes the same bits (the fused update kernels are bitwise
twins); the schedule sets the same rate. A whole one-epoch fit on CuPy then runs through
the recipe's own Trainer with the captured step, as ``dualconv train`` runs it, and learns.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.backend import asnumpy, to_backend
from dualconv.recipe import augmentation, build_trainer, make_model
from dualconv.runs import settings
from digits_28 import digits_28
from layer_error_bounds import assert_step_layer_by_layer

pytestmark = pytest.mark.gpu

IMAGES = 256
STEPS = 4
"""Steps compared (of IMAGES / 64); each runs every layer of the recipe's network on both sides."""


def _recipe(name: str, backend: str) -> tuple[dict, dc.Sequential, dc.Trainer]:
    config = settings({"model": name}, None, epochs=1)
    with dc.use_backend(backend):
        model = make_model(config, (1, 28, 28), 10)
    return config, model, build_trainer(config, model, epochs=1, n_train=IMAGES, progress=False)


@pytest.mark.parametrize("name", ["fast", "best"])
def test_a_recipe_steps_on_cupy_as_on_numpy(name):
    X, y = digits_28(IMAGES, seed=0)
    config, cpu_model, cpu = _recipe(name, "numpy")
    _, gpu_model, gpu = _recipe(name, "cupy")
    assert config["schedule"] == "onecycle" and config["nesterov"] and config["weight_decay"] > 0
    shift = augmentation(config)
    assert shift is not None and shift.k == (2 if name == "best" else 1)
    order = np.random.default_rng([0, 0]).permutation(IMAGES)
    first_rate = cpu.optimizer.lr
    for step in range(STEPS):
        gpu_model.load_state_dict(cpu_model.state_dict())
        gpu.optimizer.load_state_dict(cpu.optimizer.state_dict())
        idx = order[step * 64:(step + 1) * 64]
        xb, yb = X[idx], y[idx]
        if shift is not None:
            shifted = shift(xb, 0, 0, step)
            assert_array_equal(asnumpy(shift(to_backend(xb, "cupy"), 0, 0, step)), shifted)
            xb = shifted
        cpu_model.train()
        gpu_model.train()
        assert_step_layer_by_layer(cpu_model, gpu_model, xb, yb)
        for cpu_layer, gpu_layer in zip(cpu_model.layers, gpu_model.layers):
            for key, grad in cpu_layer.grads.items():  # the update, apart from the gradients
                gpu_layer.grads[key] = to_backend(grad, "cupy")
        assert gpu.optimizer.lr == cpu.optimizer.lr
        cpu.optimizer.step()
        gpu.optimizer.step()
        for key, value in cpu_model.state_dict().items():
            assert_array_equal(asnumpy(gpu_model.state_dict()[key]), value, err_msg=f"step {step} {key}")
        cpu.scheduler.step()
        gpu.scheduler.step()
    assert cpu.optimizer.lr != first_rate  # the schedule moved the rate per batch


@pytest.mark.parametrize("name", ["fast", "best"])
def test_a_recipe_fits_an_epoch_on_cupy_as_dualconv_train_does_and_learns(name, gpu):
    """The whole epoch through the recipe's Trainer with the captured step, as `dualconv
    train --backend cupy` runs it (on the emulated CuPy: one graph launch a full batch)."""
    X, y = digits_28(IMAGES, seed=1)
    config, model, trainer = _recipe(name, "cupy")
    trainer.cuda_graph = True
    X_device, y_device = to_backend(X, "cupy"), to_backend(y, "cupy")
    before = trainer.evaluate(X_device, y_device)["loss"]
    if gpu is not None:
        gpu.reset_counters()
    trainer.fit(X_device, y_device, epochs=1, batch_size=config["batch_size"], seed=0,
                augment=augmentation(config))
    if gpu is not None:
        steps = IMAGES // config["batch_size"]
        assert gpu.counters["graph_launches"] == steps - 1  # every full batch after the warm-up
    after = trainer.evaluate(X_device, y_device)["loss"]
    assert np.isfinite(after) and after < before, (before, after)
