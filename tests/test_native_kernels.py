"""The compiled CPU kernels (kernels/cpu_*.c through dualconv/kernels/native.py): the
same bits as the NumPy twins and the loop reference, and a NumPy fallback that keeps
working where they are off, where there is no compiler and where the build fails.

tests/test_kernels_cpu.py holds cpu.max_pool_* to the reference with whichever path
this machine takes; here each path is asked for by name.
"""
from __future__ import annotations

import numpy as np
import pytest

from dualconv.kernels import cpu, native, reference
from dualconv.kernels.layout import batch_first
from dualconv.shapes import Window


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """native.library() decided anew, with its cache in tmp_path."""
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("DUALCONV_CACHE", str(tmp_path))
    return tmp_path


def compiled_or_skip() -> None:
    if native.library() is None:
        pytest.skip("no C compiler here: the compiled kernels cannot be built")


def awkward_images(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    """Batch-last (C, H, W, N) small integers, so windows tie, with NaN, -0.0, inf and
    -inf sprinkled in."""
    rng = np.random.default_rng(seed)
    xb = rng.integers(-2, 3, shape).astype(dtype)
    for value, share in ((np.nan, 0.05), (-0.0, 0.1), (np.inf, 0.03), (-np.inf, 0.03)):
        xb[rng.random(shape) < share] = value
    return xb


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


# (C, H, W, N, kh, kw): LeNet's 2x2, odd sizes with a row and a column left over, other
# tiling windows (the general loop), one image, 1x1 windows.
SHAPES = [(8, 28, 28, 32, 2, 2), (3, 7, 9, 5, 2, 2), (2, 9, 10, 3, 3, 3), (2, 8, 9, 4, 2, 3),
          (1, 4, 4, 1, 2, 2), (2, 5, 5, 2, 1, 1)]


def run_both(monkeypatch, kernel, *args):
    """kernel(*args) with the compiled kernels off, then on."""
    monkeypatch.setenv(native.SWITCH, "0")
    off = kernel(*args)
    monkeypatch.setenv(native.SWITCH, "1")
    compiled_or_skip()
    return off, kernel(*args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_compiled_max_pool_gives_the_numpy_twins_bits(monkeypatch, fresh, shape, dtype) -> None:
    C, H, W, N, kh, kw = shape
    win = Window(kh, kw, kh, kw, 0, 0, 1, 1)
    x = batch_first(awkward_images((C, H, W, N), dtype, seed=sum(shape)))
    (y0, a0), (y1, a1) = run_both(monkeypatch, cpu.max_pool_forward, x, win)
    np.testing.assert_array_equal(bits(y1), bits(y0))
    np.testing.assert_array_equal(a1, a0)
    assert a1.dtype == np.int32 and y1.dtype == dtype
    gy = batch_first(awkward_images((C, H // kh, W // kw, N), dtype, seed=N))
    gx0, gx1 = run_both(monkeypatch, cpu.max_pool_backward, gy, a0, H, W, win)
    np.testing.assert_array_equal(bits(gx1), bits(gx0))


@pytest.mark.parametrize("switch", ["0", "1"])
@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_either_path_matches_the_loop_reference(monkeypatch, fresh, shape, switch) -> None:
    C, H, W, N, kh, kw = shape
    monkeypatch.setenv(native.SWITCH, switch)
    if switch == "1":
        compiled_or_skip()
    win = Window(kh, kw, kh, kw, 0, 0, 1, 1)
    x = batch_first(awkward_images((C, H, W, N), np.float64, seed=C * H))
    y, argmax = cpu.max_pool_forward(x, win)
    y_ref, argmax_ref = reference.max_pool_forward(x, win)
    np.testing.assert_array_equal(bits(y), bits(y_ref))
    np.testing.assert_array_equal(argmax, argmax_ref)
    gy = np.random.default_rng(W).standard_normal(y.shape)
    np.testing.assert_array_equal(bits(cpu.max_pool_backward(gy, argmax, H, W, win)),
                                  bits(reference.max_pool_backward(gy, argmax, H, W, win)))


def test_compiled_max_pool_takes_any_memory_order(monkeypatch, fresh) -> None:
    """An input stored batch-first (as a user's NumPy array is) gives the same numbers."""
    compiled_or_skip()
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 8)).astype(np.float32)
    win = Window(2, 2, 2, 2, 0, 0, 1, 1)
    y, argmax = cpu.max_pool_forward(x, win)
    y_ref, argmax_ref = reference.max_pool_forward(x, win)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)


def test_hand_worked_window(monkeypatch, fresh) -> None:
    """One 2x2 window per case, its four values in row-major order -> (max, argmax)."""
    compiled_or_skip()
    cases = [([1, 3, 3, 2], 3, 1), ([-0.0, 0.0, -1, -2], -0.0, 0), ([1, np.nan, 5, np.nan], np.nan, 1),
             ([-np.inf, -np.inf, -np.inf, -np.inf], -np.inf, 0), ([0, 0, 0, 7], 7, 3)]
    xb = np.array([c[0] for c in cases], dtype=np.float32).reshape(len(cases), 2, 2, 1)
    y, argmax = cpu.max_pool_forward(batch_first(xb), Window(2, 2, 2, 2, 0, 0, 1, 1))
    for i, (_, top, at) in enumerate(cases):
        assert bits(y[0, i, 0, 0]).tobytes() == bits(np.float32(top)).tobytes()
        assert argmax[0, i, 0, 0] == at


def test_switched_off_there_is_no_library(monkeypatch, fresh) -> None:
    monkeypatch.setenv(native.SWITCH, "0")
    assert native.library() is None
    assert not list(fresh.rglob("*.so"))


def test_without_a_compiler_numpy_runs_silently(monkeypatch, fresh, recwarn) -> None:
    monkeypatch.setenv("CC", str(fresh / "no-such-compiler"))
    monkeypatch.delenv(native.SWITCH, raising=False)
    assert native.library() is None
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y, _ = cpu.max_pool_forward(x, Window(2, 2, 2, 2, 0, 0, 1, 1))
    np.testing.assert_array_equal(y, [[[[5, 7], [13, 15]]]])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_failed_build_warns_once_and_numpy_runs(monkeypatch, fresh) -> None:
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    monkeypatch.delenv(native.SWITCH, raising=False)
    with pytest.warns(RuntimeWarning, match="compiled CPU kernels could not be built"):
        assert native.library() is None
    assert native.library() is None  # decided once: no second warning, no second build
    assert not list(fresh.rglob("*.so"))


def test_built_once_then_loaded_from_the_cache(monkeypatch, fresh) -> None:
    monkeypatch.delenv(native.SWITCH, raising=False)
    compiled_or_skip()
    (built,) = fresh.rglob("*.so")
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(native, "_loaded", {})
    assert native.library() is not None
    assert [p.stat().st_mtime_ns for p in fresh.rglob("*.so")] == [stamp]
