"""The fused kernels (kernels/optimizers.cu, kernels/softmax_cross_entropy.cu,
kernels/dropout.cu), run on the CPU through the g++ emulation, against their CPU twins.

The optimizer kernels do the twins' operations in the same order, and the
module is compiled with --fmad=false (no contraction into an FMA), so they are
bitwise equal; Dropout's mask is integer arithmetic and one product, bitwise
equal too. Softmax cross-entropy calls exp and log, whose last bits differ
between libraries: it is held to an error bound derived below.
"""
from __future__ import annotations

import numpy as np
import pytest

from dualconv import kernels
from dualconv.kernels import cpu_fused as cpu, cuda_plans
from kernel_cases import DTYPES, assert_bitwise_equal
from layer_error_bounds import softmax_cross_entropy_rows_bound

pytestmark = pytest.mark.cuda_emulated

FUSED_UNDER_TEST = ("sgd_update", "adam_update", "softmax_cross_entropy", "dropout_forward")

SGD_SETTINGS = [  # momentum, nesterov, weight decay
    (0.0, False, 0.0), (0.0, False, 0.01), (0.9, False, 0.0), (0.9, True, 0.0),
    (0.5, True, 1e-3), (0.99, False, 0.1)]


def _spread(rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("momentum, nesterov, weight_decay", SGD_SETTINGS)
def test_sgd_update_matches_the_cpu_twin(emulator, dtype, momentum, nesterov, weight_decay):
    rng = np.random.default_rng(0)
    w, v = _spread(rng, 1003, dtype), _spread(rng, 1003, dtype)
    w_emu, v_emu = w.copy(), v.copy()
    for step in range(3):
        g = _spread(rng, 1003, dtype)
        cpu.sgd_update(w, g, v if momentum else None, 0.05, momentum, weight_decay, nesterov)
        emulator.call("sgd_update", w_emu, g, v_emu if momentum else None, 0.05, momentum,
                      weight_decay, nesterov)
        assert_bitwise_equal(w_emu, w, f"w after step {step}")
        assert_bitwise_equal(v_emu, v, f"velocity after step {step}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_update_matches_the_cpu_twin(emulator, dtype, weight_decay):
    rng = np.random.default_rng(1)
    w, m = _spread(rng, 777, dtype), _spread(rng, 777, dtype)
    v = np.abs(_spread(rng, 777, dtype))
    state_emu = [a.copy() for a in (w, m, v)]
    for step in (1, 2, 3, 10):
        g = _spread(rng, 777, dtype)
        cpu.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-8, weight_decay, step)
        emulator.call("adam_update", *state_emu[:1], g, *state_emu[1:], 1e-3, 0.9, 0.999, 1e-8,
                      weight_decay, step)
        for name, ours, theirs in zip("wmv", state_emu, (w, m, v)):
            assert_bitwise_equal(ours, theirs, f"{name} after step {step}")


def test_updates_refuse_arrays_they_could_not_update_in_place():
    """The plan's own rule (a copy would lose the update); shapes are the dispatch's check."""
    w = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="sgd_update: w must be C-contiguous"):
        cuda_plans.plan_sgd_update(w.T, np.zeros((6, 4), np.float32), None, 0.1, 0.0, 0.0, False)
    with pytest.raises(ValueError, match=r"adam_update: v must have shape \(4, 6\)"):
        kernels.adam_update(w, w, w, np.zeros(3, np.float32), 0.1, 0.9, 0.999, 1e-8, 0.0, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("scale", [0.1, 5.0, 80.0])
def test_softmax_cross_entropy_matches_the_cpu_twin_within_its_bound(emulator, dtype, scale):
    rng = np.random.default_rng(int(scale * 10))
    z = (rng.standard_normal((67, 10)) * scale).astype(dtype)
    labels = rng.integers(0, 10, 67)
    loss, gz = cpu.softmax_cross_entropy(z, labels)
    loss_emu, gz_emu = emulator.call("softmax_cross_entropy", z, labels)
    assert loss_emu.dtype == loss.dtype and gz_emu.shape == gz.shape
    loss_bound, gz_bound = softmax_cross_entropy_rows_bound(z, labels)
    assert np.all(np.abs(loss_emu.astype(np.float64) - loss) <= loss_bound)
    assert np.all(np.abs(gz_emu.astype(np.float64) - gz) <= gz_bound)


def test_softmax_cross_entropy_row_of_a_bad_label_is_nan_on_both_twins(emulator):
    """A label outside [0, C) reads no logit: its row's loss is NaN, its gz row the softmax / N."""
    z = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    labels = np.array([0, 4, -1])
    loss, gz = emulator.call("softmax_cross_entropy", z, labels)
    loss_cpu, gz_cpu = cpu.softmax_cross_entropy(z, labels)
    assert np.isnan(loss).tolist() == np.isnan(loss_cpu).tolist() == [False, True, True]
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(gz_cpu[1:], softmax[1:] / 3, rtol=1e-5)
    # rows 1 and 2 subtract no one-hot: a label-0 row's bound covers them (one rounding more)
    loss_bound, gz_bound = softmax_cross_entropy_rows_bound(z, np.array([0, 0, 0]))
    assert abs(float(loss[0]) - float(loss_cpu[0])) <= loss_bound[0]
    assert np.all(np.abs(gz.astype(np.float64) - gz_cpu) <= gz_bound)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, first_sample, p", [((64, 300), 0, 0.2), ((7, 3, 5, 4), 10, 0.5),
                                                    ((1, 9), 2, 0.0), ((33, 2), 0, 0.95)])
def test_dropout_forward_matches_the_cpu_twin(emulator, dtype, shape, first_sample, p):
    """Mask and product bit for bit, for batch-last and C-ordered inputs (the kernel reads
    the batch-last copy of the latter), an odd batch, a part not at sample 0, p = 0;
    an inf and a NaN in x give NaN where dropped (0 * inf), as on the CPU."""
    rng = np.random.default_rng(len(shape) + first_sample)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[:2] = [np.inf, np.nan]
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    key = 0xFEDC_BA98_7654_3210
    for stored in (batch_last, x):
        y_emu, mask_emu = emulator.call("dropout_forward", stored, key, p, first_sample)
        with np.errstate(invalid="ignore"):  # 0 * inf
            y, mask = cpu.dropout_forward(stored, key, p, first_sample)
        assert_bitwise_equal(mask_emu, mask, "mask")
        assert_bitwise_equal(y_emu, y, "y")
