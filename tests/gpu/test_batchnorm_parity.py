"""BatchNorm2D / BatchNorm1D and LeNet-BN on CuPy against the NumPy path.

Runs only where a GPU is usable (marker ``gpu``). The layer is written once
against xp, so the two backends differ only in summation order.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.backend import asnumpy, to_backend
from dualconv.models import lenet_bn
from digits_28 import digits_28
from error_bounds import assert_within
from layer_error_bounds import assert_step_layer_by_layer, batchnorm_bounds

pytestmark = pytest.mark.gpu  # on a GPU when usable, else on the emulated CuPy (conftest.py)

CASES = [("bn2d", dc.BatchNorm2D, (4, 3, 6, 5)), ("bn1d", dc.BatchNorm1D, (8, 5)),
         ("bn1d-seq", dc.BatchNorm1D, (3, 4, 7))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name,cls,shape", CASES, ids=[c[0] for c in CASES])
def test_batchnorm_forward_backward_and_running_stats_match_numpy(name, cls, shape, mode, dtype, gpu):
    """Each side within batchnorm_bounds (layer_error_bounds.py), the two within twice it;
    bitwise equal under the emulated CuPy (``gpu`` is its handle), whose arrays are
    NumPy's and whose reductions are NumPy's over the same shapes."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    cpu = cls(shape[1], momentum=0.2).astype(dtype)
    cpu.params["weight"][...] = rng.uniform(0.5, 2.0, shape[1])
    cpu.params["bias"][...] = rng.standard_normal(shape[1])
    cpu.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    gpu_layer = cls(shape[1], momentum=0.2).astype(dtype)
    for store, source in ((gpu_layer.params, cpu.params), (gpu_layer.buffers, cpu.buffers)):
        for key, value in source.items():
            store[key] = value.copy()
    gpu_layer.to("cupy")
    getattr(cpu, mode)()
    getattr(gpu_layer, mode)()
    gy = rng.standard_normal(shape).astype(dtype)
    bounds = batchnorm_bounds(cpu, x, gy)
    pairs = [("y", asnumpy(gpu_layer.forward(to_backend(x, "cupy"))), cpu.forward(x)),
             ("gx", asnumpy(gpu_layer.backward(to_backend(gy, "cupy"))), cpu.backward(gy))]
    for key in cpu.grads:
        assert type(gpu_layer.grads[key]).__module__.startswith("cupy")
        pairs.append((f"grad:{key}", asnumpy(gpu_layer.grads[key]), cpu.grads[key]))
    for key in cpu.buffers:
        assert type(gpu_layer.buffers[key]).__module__.startswith("cupy")
        pairs.append((key, asnumpy(gpu_layer.buffers[key]), cpu.buffers[key]))
    for what, on_gpu, on_cpu in pairs:
        bound = bounds.get(what, 0.0)  # eval mode leaves the running statistics as they were
        assert_within(on_gpu, on_cpu, 2 * bound, f"{name} {what}: ")
        if gpu is not None:
            assert_array_equal(on_gpu, on_cpu, err_msg=f"{name} {what}")


def test_lenet_bn_training_steps_match_numpy_layer_by_layer():
    """5 SGD steps of LeNet-BN in training mode. Before each, the CuPy model takes the NumPy
    model's state (weights and running statistics); the step is then compared layer by
    layer, each layer within its one-layer bound (layer_error_bounds.assert_step_layer_by_layer).
    A whole-network bound would carry each BatchNorm's worst case through the next ones and
    say nothing; the layers' own bounds are tight. Dropout draws the same masks on both."""
    X, y = digits_28(80)
    models = {}
    for backend in ("numpy", "cupy"):
        with dc.use_backend(backend):
            models[backend] = lenet_bn(seed=3)
            models[backend].build((1, 1, 28, 28))
            models[backend].seed_randomness(7)  # the same Dropout masks on both backends
            models[backend].train()
    optimizer = dc.SGD(models["numpy"].parameters(), lr=0.05, momentum=0.9)
    for i in range(0, 80, 16):
        models["cupy"].load_state_dict(models["numpy"].state_dict())
        assert_step_layer_by_layer(models["numpy"], models["cupy"], X[i:i + 16], y[i:i + 16])
        optimizer.step()
