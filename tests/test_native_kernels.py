"""The compiled CPU kernels (kernels/cpu_*.c through dualconv/kernels/native.py): the
same bits as the NumPy twins and the loop reference, and a NumPy fallback that keeps
working where they are off, where there is no compiler and where the build fails.

tests/test_kernels_cpu.py holds cpu.max_pool_* to the reference with whichever path
this machine takes; here each path is asked for by name.
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from dualconv.kernels import cpu, native, native_conv, native_max_pool, reference
from dualconv.kernels.layout import batch_first
from dualconv.shapes import Window


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def decided_anew(monkeypatch, shared_cache):
    """native.library() decided anew, with this module's cache (built once for its tests)."""
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("DUALCONV_CACHE", str(shared_cache))
    return shared_cache


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """native.library() decided anew, with an empty cache in tmp_path (for tests that look
    at what is built)."""
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
def test_compiled_max_pool_gives_the_numpy_twins_bits(monkeypatch, decided_anew, shape, dtype) -> None:
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
def test_either_path_matches_the_loop_reference(monkeypatch, decided_anew, shape, switch) -> None:
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


def test_compiled_max_pool_takes_any_memory_order(monkeypatch, decided_anew) -> None:
    """An input stored batch-first (as a user's NumPy array is) gives the same numbers."""
    compiled_or_skip()
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 8)).astype(np.float32)
    win = Window(2, 2, 2, 2, 0, 0, 1, 1)
    y, argmax = cpu.max_pool_forward(x, win)
    y_ref, argmax_ref = reference.max_pool_forward(x, win)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)


def test_hand_worked_window(monkeypatch, decided_anew) -> None:
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


def _failing_on_march(folder, message: str, baseline_too: bool = False) -> str:
    """A compiler command that fails where -march=native is given, printing ``message``
    (and, with ``baseline_too``, fails without it as well), else runs the real compiler."""
    wrapper = folder / "failing-cc"
    otherwise = "echo 'kernels.c:1: error: what the baseline build met' >&2; exit 1" if baseline_too else \
        f"exec {shlex.join(native._compiler())} \"$@\""
    wrapper.write_text(f"#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = -march=native ]; then\n"
                       f"    echo '{message}' >&2; exit 1\n  fi\ndone\n{otherwise}\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def _decided_with_compiler(monkeypatch, folder, make_compiler: Callable[[Path], str]) -> None:
    """native.library() to be decided anew with make_compiler(folder) as $CC (made once this
    machine's compiler is known to work), into a cache of its own."""
    monkeypatch.delenv(native.SWITCH, raising=False)
    compiled_or_skip()
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("CC", make_compiler(folder))
    monkeypatch.setenv("DUALCONV_CACHE", str(folder / "with-cc"))


def test_a_compiler_that_refuses_march_native_gets_a_baseline_build(monkeypatch, fresh) -> None:
    """A compiler that does not take -march=native for its target (as some do not): a
    second build without it loads, silently; on x86-64 that baseline has neither AVX2 nor
    AVX-512, so the convolution is left to the GEMM twin while max-pool and SGD stay compiled."""
    _decided_with_compiler(monkeypatch, fresh,
                           lambda folder: _failing_on_march(folder, "error: unsupported option -march=native"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib = native.library()
    assert lib is not None and len(list((fresh / "with-cc").rglob("*.so"))) == 1
    if platform.machine() in ("x86_64", "AMD64"):
        assert native_conv.library() is None
    xb = awkward_images((2, 4, 6, 32), np.float32, seed=3)
    assert native_max_pool.forward(xb, Window(2, 2, 2, 2, 0, 0, 1, 1)) is not None


def test_an_error_of_the_sources_is_not_hidden_by_a_baseline_build(monkeypatch, fresh) -> None:
    """Only a refused -march gets the second build: an error in the code built for this
    CPU (its AVX-512 or AVX2 blocks) is reported, not covered by a build without them."""
    _decided_with_compiler(monkeypatch, fresh, lambda folder: _failing_on_march(
        folder, "cpu_conv.c:34: error: undeclared in the AVX-512 blocks"))
    with pytest.warns(RuntimeWarning, match="undeclared in the AVX-512 blocks"):
        assert native.library() is None


def test_both_reasons_are_given_where_the_baseline_build_fails_too(monkeypatch, fresh) -> None:
    _decided_with_compiler(monkeypatch, fresh, lambda folder: _failing_on_march(
        folder, "error: unsupported option -march=native", baseline_too=True))
    with pytest.warns(RuntimeWarning, match="-march=native; then without -march: .*what the baseline build met"):
        assert native.library() is None


def test_a_call_during_a_build_waits_for_it(monkeypatch, fresh) -> None:
    """Another thread's library() while the first call builds gets the library, not None:
    nothing is decided until the build is done."""
    monkeypatch.delenv(native.SWITCH, raising=False)
    compiled_or_skip()
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("DUALCONV_CACHE", str(fresh / "slow"))
    started, go = threading.Event(), threading.Event()
    compile_now = native._compile

    def held_compile(*args):
        started.set()
        go.wait(60)
        return compile_now(*args)
    monkeypatch.setattr(native, "_compile", held_compile)
    found: dict[str, object] = {}
    first = threading.Thread(target=lambda: found.update(first=native.library()))
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=lambda: found.update(second=native.library()))
    second.start()
    go.set()
    first.join(60)
    second.join(60)
    assert found["first"] is not None and found["second"] is found["first"]


def test_the_engines_worker_inherits_the_decision_and_does_not_warn_again(fresh) -> None:
    """A failed build warns once: the caller decides before it forks the engine's worker,
    which inherits the decision instead of trying the build again and warning on its own.
    In a process of its own, as a user runs it (under pytest a forked child records its
    warnings in the copy of pytest's catcher, and nothing shows)."""
    script = ("import numpy as np, dualconv as dc\n"
              "from dualconv.models import lenet\n"
              "dc.set_num_threads(2)\n"
              "lenet(seed=0).forward(np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32))\n"
              "from dualconv.engine import workers\n"
              "print(len(workers.workers))\n")  # a worker process was forked
    env = dict(os.environ, CC="false", DUALCONV_CACHE=str(fresh), DUALCONV_WORKERS="processes")
    env.pop(native.SWITCH, None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["1"], done.stderr
    assert done.stderr.count("could not be built") == 1, done.stderr


def test_built_once_then_loaded_from_the_cache(monkeypatch, fresh) -> None:
    monkeypatch.delenv(native.SWITCH, raising=False)
    compiled_or_skip()
    (built,) = fresh.rglob("*.so")
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(native, "_loaded", {})
    assert native.library() is not None
    assert [p.stat().st_mtime_ns for p in fresh.rglob("*.so")] == [stamp]


def test_a_failed_build_under_an_error_filter_still_falls_back(monkeypatch, fresh) -> None:
    """With RuntimeWarnings raised as errors, the first call raises the warning, and the
    decision is kept: later calls give None without building again."""
    monkeypatch.setenv("CC", "false")
    monkeypatch.delenv(native.SWITCH, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning):
            native.library()
        assert native.library() is None


def test_a_compiler_that_prints_bytes_not_text_is_a_failed_build(monkeypatch, decided_anew) -> None:
    fake = decided_anew / "bad-cc"
    fake.write_text("#!/bin/sh\nprintf '\\377\\376 error\\n' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.delenv(native.SWITCH, raising=False)
    with pytest.warns(RuntimeWarning, match="exited with 1"):
        assert native.library() is None


def test_cc_may_carry_options(monkeypatch, fresh) -> None:
    """CC="cc -DSOMETHING" (as "ccache gcc" would be) is a compiler with its options."""
    monkeypatch.delenv(native.SWITCH, raising=False)
    compiled_or_skip()
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("CC", "cc -DDUALCONV_TEST_OPTION=1")
    assert native.library() is not None
    assert len(list(fresh.rglob("*.so"))) == 2  # another command, another library


def _library_found(queue) -> None:
    queue.put(native.library() is not None or not native.enabled())


def test_a_child_forked_while_the_lock_is_held_decides_on_its_own(monkeypatch, decided_anew) -> None:
    """A fork while a build holds the lock (another thread building) gives the child a
    free lock: its first call returns instead of waiting forever."""
    monkeypatch.delenv(native.SWITCH, raising=False)
    compiled_or_skip()
    monkeypatch.setattr(native, "_loaded", {})  # the child must decide anew, under the lock
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with native._lock:
        child = context.Process(target=_library_found, args=(queue,))
        child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and queue.get(timeout=5)


def test_clang_builds_with_contraction_it_can_turn_off() -> None:
    """clang ignores its fp contract(off) pragma under -ffp-contract=fast, so it builds with
    "on"; GCC (which treats "on" as "off") keeps "fast" and its own pragma."""
    gcc = native._flags("gcc (Debian 12.2.0-14) 12.2.0")
    clang = native._flags("Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu")
    assert "-ffp-contract=fast" in gcc and "-ffp-contract=on" not in gcc
    assert "-ffp-contract=on" in clang and "-ffp-contract=fast" not in clang
    assert [f for f in gcc if "contract" not in f] == [f for f in clang if "contract" not in f]
