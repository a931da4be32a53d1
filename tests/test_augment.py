"""Shift(k): random translation with zero fill, a pure function of (seed, epoch, step),
the same bits on the emulated CuPy as on NumPy, and how Trainer.fit applies it."""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from dualconv.augment import Shift, parse_augment


def images(n: int = 5, c: int = 2, h: int = 6, w: int = 7) -> np.ndarray:
    return np.random.default_rng(0).random((n, c, h, w), dtype=np.float32)


def test_a_hand_worked_shift():
    x = (np.arange(16, dtype=np.float32) + 1).reshape(1, 1, 4, 4)
    shift = Shift(1)
    shift.offsets = lambda n, seed, epoch, step: np.array([[1, -1]])  # down one row, left one column
    expected = np.array([[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0]], dtype=np.float32)
    assert np.array_equal(shift(x, 0, 0, 0)[0, 0], expected)


def test_every_sample_moves_by_its_own_offsets():
    x = images()
    shift = Shift(2)
    out = shift(x, 3, 1, 4)
    offsets = shift.offsets(len(x), 3, 1, 4)
    assert out.shape == x.shape and out.dtype == x.dtype and np.abs(offsets).max() <= 2
    for n, (dy, dx) in enumerate(offsets):
        expected = np.zeros_like(x[n])
        rows, cols = slice(max(dy, 0), x.shape[2] + min(dy, 0)), slice(max(dx, 0), x.shape[3] + min(dx, 0))
        expected[:, rows, cols] = x[n, :, max(-dy, 0):x.shape[2] - max(dy, 0), max(-dx, 0):x.shape[3] - max(dx, 0)]
        assert np.array_equal(out[n], expected), n


def test_deterministic_per_seed_epoch_and_step():
    x, shift = images(64), Shift(2)
    assert np.array_equal(shift(x, 0, 1, 2), Shift(2)(x, 0, 1, 2))
    draws = [shift.offsets(64, *key) for key in [(0, 1, 2), (1, 1, 2), (0, 2, 2), (0, 1, 3)]]
    assert all(not np.array_equal(draws[0], other) for other in draws[1:])
    assert np.array_equal(Shift(0)(x, 0, 0, 0), x)


@pytest.mark.gpu
def test_the_same_bits_on_the_emulated_cupy():
    from dualconv.testing import emulated_cupy

    x = images()
    with emulated_cupy():
        import cupy

        out = Shift(2)(cupy.asarray(x), 7, 2, 5)
        assert isinstance(out, cupy.ndarray)
        assert np.array_equal(out.get(), Shift(2)(x, 7, 2, 5))


def test_fit_trains_on_shifted_batches_reproducibly():
    rng = np.random.default_rng(2)
    X, y = rng.random((32, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 32)
    seen = []

    class Spy(Shift):
        def __call__(self, x, seed, epoch, step):
            seen.append((seed, epoch, step))
            return super().__call__(x, seed, epoch, step)

    def train(augment):
        model = dc.models.weidman(seed=1)
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.1), progress=False)
        trainer.fit(X, y, epochs=2, batch_size=16, seed=9, augment=augment)
        return model.layers[0].params["weight"]

    first = train(Spy(1))
    assert seen == [(9, 0, 0), (9, 0, 1), (9, 1, 0), (9, 1, 1)]
    assert np.array_equal(first, train(Shift(1)))
    assert not np.array_equal(first, train(None))


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="k .* must be an integer >= 0, got -1"):
        Shift(-1)
    with pytest.raises(ValueError, match=r"--augment takes shift=K .*got 'flip'"):
        parse_augment("flip")
    with pytest.raises(ValueError, match=r"expects images \(N, C, H, W\)"):
        Shift(1)(np.zeros((3, 4), np.float32), 0, 0, 0)
    assert parse_augment("shift=3").k == 3


@pytest.mark.gpu
def test_a_shift_by_device_offsets_reads_nothing_back():
    """Shift.by with offsets already on the device (a captured step's case): a strided view
    (cupy.lib.stride_tricks.as_strided, no launch) and a gather, with no transfer or sync."""
    from dualconv.testing import emulated_cupy

    x = images(4, 2, 5, 6)
    shift = Shift(2)
    offsets = shift.offsets(4, 1, 0, 3)
    with emulated_cupy() as emu:
        import cupy

        xd, od = cupy.asarray(x), cupy.asarray(offsets)
        emu.reset_counters()
        out = shift.by(xd, od)
        assert emu.counters["host_to_device"] == emu.counters["device_to_host"] == emu.counters["syncs"] == 0
        view = cupy.lib.stride_tricks.as_strided(xd, (4, 2, 2, 6), (xd.strides[0], xd.strides[1], xd.strides[2],
                                                                   xd.strides[3]))
        assert view.shape == (4, 2, 2, 6)
        assert np.array_equal(out.get(), shift.by(x, offsets))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_offsets_of_any_integer_type_shift_alike(dtype):
    """k - dy is formed in 64 bits: int8 offsets of -64 with k = 64 shift as int64 ones do."""
    x = (np.arange(70, dtype=np.float32) + 1).reshape(1, 1, 70, 1)
    shifted = Shift(64).by(x, np.array([[-64, 0]], dtype))
    assert np.array_equal(shifted[0, 0, :, 0], np.concatenate([np.arange(65, 71), np.zeros(64)]).astype(np.float32))
