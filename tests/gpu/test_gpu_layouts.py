"""The GPU path keeps the CPU path's memory layouts, although CuPy allocates a ufunc's
output C-contiguous where NumPy keeps its input's layout: every layer's output and input
gradient is stored as on NumPy (batch-last from a convolution on), so the pooling and
im2col kernels, which read images through their strides, read neighbouring samples from
neighbouring addresses, and elementwise layers walk memory in order."""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from dualconv.models import lenet, lenet_bn

pytestmark = pytest.mark.gpu


BY_DESIGN: set[str] = set()
"""Layers whose CUDA twin picks its own layout: none (Dropout keeps x's order on both)."""


def _layout(a) -> tuple[int, ...]:
    """The axes of length > 1 from the largest stride to the smallest: the storage order."""
    axes = [i for i in range(a.ndim) if a.shape[i] > 1]
    return tuple(sorted(axes, key=lambda i: -abs(a.strides[i])))


def _other_layers(seed: int) -> dc.Sequential:
    """Every elementwise activation and both pools, between two convolutions."""
    return dc.Sequential([dc.Conv2D(None, 4, 3, padding=1), dc.Tanh(), dc.AvgPool2D(2, 2),
                          dc.HardTanh(), dc.Conv2D(None, 6, 3), dc.LeakyReLU(0.1), dc.Sigmoid(),
                          dc.MaxPool2D(2, 2), dc.Identity(), dc.ReLU(), dc.Flatten(),
                          dc.Dense(None, 10)], seed=seed)


@pytest.mark.parametrize("make", [lenet, lenet_bn, _other_layers])
def test_every_layer_stores_its_output_and_gradient_as_on_the_cpu(make):
    import cupy
    rng = np.random.default_rng(0)
    cpu, gpu = make(seed=0), make(seed=0)
    gpu.to("cupy")
    x_cpu = rng.random((8, 1, 28, 28), dtype=np.float32)
    x_gpu = cupy.asarray(x_cpu)
    batch_last_seen = 0
    for layer_cpu, layer_gpu in zip(cpu.layers, gpu.layers):
        x_cpu, x_gpu = layer_cpu.forward(x_cpu), layer_gpu.forward(x_gpu)
        name = type(layer_cpu).__name__
        if name in BY_DESIGN:
            x_gpu = cupy.asarray(x_cpu)  # go on from the CPU's layout
            continue
        assert _layout(x_gpu) == _layout(x_cpu), (name, x_gpu.strides, x_cpu.strides)
        if x_gpu.ndim == 4:
            assert x_gpu.strides[0] == x_gpu.itemsize, (name, x_gpu.strides)  # batch-last
            batch_last_seen += 1
    assert batch_last_seen >= 6  # convolutions, activations, norms and pools
    g_cpu = rng.random(x_cpu.shape, dtype=np.float32)
    g_gpu = cupy.asarray(g_cpu)
    for layer_cpu, layer_gpu in zip(reversed(cpu.layers), reversed(gpu.layers)):
        g_cpu, g_gpu = layer_cpu.backward(g_cpu), layer_gpu.backward(g_gpu)
        name = type(layer_cpu).__name__
        if name in BY_DESIGN:
            g_gpu = cupy.asarray(g_cpu)
            continue
        assert _layout(g_gpu) == _layout(g_cpu), (name, g_gpu.strides, g_cpu.strides)


def test_an_elementwise_layer_reads_a_batch_last_input_in_storage_order(emu):
    """No copy and no change of layout through ReLU forward and backward."""
    import cupy
    stored = cupy.asarray(np.random.default_rng(1).standard_normal((6, 5, 5, 8), dtype=np.float32))
    x = stored.transpose(3, 0, 1, 2)  # (N, C, H, W) seen, (C, H, W, N) stored
    relu = dc.ReLU()
    relu.to("cupy")
    emu.reset_counters()
    y = relu.forward(x)
    gx = relu.backward(x)
    assert y.strides == x.strides and gx.strides == x.strides
    assert emu.counters["copy_bytes"] == 0
    np.testing.assert_array_equal(cupy.asnumpy(y), np.maximum(cupy.asnumpy(x), 0))
