"""BatchNorm2D / BatchNorm1D and LeNet-BN on CuPy against the NumPy path.

Runs only where a GPU is usable (marker ``gpu``). The layer is written once
against xp, so the two backends differ only in summation order.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import dualconv as dc
from dualconv.backend import asnumpy, to_backend
from dualconv.models import lenet_bn
from digits_28 import digits_28

pytestmark = pytest.mark.gpu  # on a GPU when usable, else on the emulated CuPy (conftest.py)

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
CASES = [("bn2d", dc.BatchNorm2D, (4, 3, 6, 5)), ("bn1d", dc.BatchNorm1D, (8, 5)),
         ("bn1d-seq", dc.BatchNorm1D, (3, 4, 7))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name,cls,shape", CASES, ids=[c[0] for c in CASES])
def test_batchnorm_forward_backward_and_running_stats_match_numpy(name, cls, shape, mode, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    cpu = cls(shape[1], momentum=0.2).astype(dtype)
    cpu.params["weight"][...] = rng.uniform(0.5, 2.0, shape[1])
    cpu.params["bias"][...] = rng.standard_normal(shape[1])
    cpu.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    gpu = cls(shape[1], momentum=0.2).astype(dtype)
    for store, source in ((gpu.params, cpu.params), (gpu.buffers, cpu.buffers)):
        for key, value in source.items():
            store[key] = value.copy()
    gpu.to("cupy")
    getattr(cpu, mode)()
    getattr(gpu, mode)()
    tol = RTOL[dtype]
    assert_allclose(asnumpy(gpu.forward(to_backend(x, "cupy"))), cpu.forward(x), rtol=tol, atol=tol)
    gy = rng.standard_normal(shape).astype(dtype)
    assert_allclose(asnumpy(gpu.backward(to_backend(gy, "cupy"))), cpu.backward(gy), rtol=tol, atol=tol)
    for store_gpu, store_cpu in ((gpu.grads, cpu.grads), (gpu.buffers, cpu.buffers)):
        for key in store_cpu:
            assert type(store_gpu[key]).__module__.startswith("cupy")
            assert_allclose(asnumpy(store_gpu[key]), store_cpu[key], rtol=tol, atol=tol)


def test_lenet_bn_20_steps_same_losses_and_running_stats_on_both_backends():
    X, y = digits_28(320)
    losses, states = {}, {}
    for backend in ("numpy", "cupy"):
        with dc.use_backend(backend):
            model = lenet_bn(seed=3)
            model.build((1, 1, 28, 28))
            model.seed_randomness(7)  # the same Dropout masks on both backends
            trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                                 dc.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False)
            losses[backend] = np.array([float(trainer.train_step(to_backend(X[i:i + 16], backend),
                                                                 to_backend(y[i:i + 16], backend))[0])
                                        for i in range(0, 320, 16)])
            states[backend] = model.state_dict()
    assert_allclose(losses["cupy"], losses["numpy"], rtol=0, atol=1e-4)
    for name, value in states["numpy"].items():
        assert_allclose(states["cupy"][name], value, rtol=1e-3, atol=1e-4, err_msg=name)
