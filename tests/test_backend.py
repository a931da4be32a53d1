"""Backend selection: set_backend / get_backend / use_backend, DUALCONV_BACKEND,
"auto", gpu_available, and moving models. No GPU here: CuPy's presence and
absence are simulated by replacing backend._import_cupy (a usable GPU by the
emulated CuPy of dualconv.testing, which compiles and runs the probe kernel)."""
from __future__ import annotations

import types

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv import backend


@pytest.fixture(autouse=True)
def fresh_backend(monkeypatch):
    """No explicit choice and no environment variable at the start of each test."""
    monkeypatch.setattr(backend, "_global", None)
    monkeypatch.setattr(backend, "_checked", {})  # the once-per-process GPU check, redone per test
    monkeypatch.delenv("DUALCONV_BACKEND", raising=False)
    assert backend._current.get() is None


def fake_cupy(count: int = 1, error: Exception | None = None) -> types.SimpleNamespace:
    """Enough of a cupy module for cupy_problem(): cuda.runtime.getDeviceCount()."""
    def get_device_count() -> int:
        if error is not None:
            raise error
        return count
    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.fixture
def with_gpu(monkeypatch):
    """CuPy imports, sees one device and compiles kernels: the emulated CuPy."""
    from dualconv.testing import fake_cupy as emulated
    monkeypatch.setattr(backend, "_import_cupy", lambda: emulated)


@pytest.fixture
def without_cupy(monkeypatch):
    monkeypatch.setattr(backend, "_import_cupy", lambda: None)


# -- set / get / use -------------------------------------------------------------------

def test_default_is_numpy() -> None:
    assert dc.get_backend() == "numpy"


def test_set_backend_returns_and_keeps_the_choice(with_gpu) -> None:
    assert dc.set_backend("cupy") == "cupy"
    assert dc.get_backend() == "cupy"
    assert dc.set_backend("numpy") == "numpy"
    assert dc.get_backend() == "numpy"


def test_use_backend_nests_and_restores(with_gpu) -> None:
    dc.set_backend("numpy")
    with dc.use_backend("cupy") as outer:
        assert outer == "cupy" and dc.get_backend() == "cupy"
        with dc.use_backend("numpy") as inner:
            assert inner == "numpy" and dc.get_backend() == "numpy"
            with dc.use_backend("cupy"):
                assert dc.get_backend() == "cupy"
            assert dc.get_backend() == "numpy"
        assert dc.get_backend() == "cupy"
    assert dc.get_backend() == "numpy"


def test_use_backend_restores_after_an_exception(with_gpu) -> None:
    with pytest.raises(KeyError):
        with dc.use_backend("cupy"):
            raise KeyError("inside")
    assert dc.get_backend() == "numpy"


def test_use_backend_beats_set_backend(with_gpu) -> None:
    dc.set_backend("cupy")
    with dc.use_backend("numpy"):
        assert dc.get_backend() == "numpy"
    assert dc.get_backend() == "cupy"


def test_failed_use_backend_changes_nothing(without_cupy) -> None:
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        with dc.use_backend("cupy"):
            pytest.fail("the block must not run")
    assert dc.get_backend() == "numpy"


# -- the environment variable ----------------------------------------------------------

@pytest.mark.parametrize("value", ["numpy", " NumPy ", "", "NUMPY"])
def test_env_var_numpy(monkeypatch, value) -> None:
    monkeypatch.setenv("DUALCONV_BACKEND", value)
    assert dc.get_backend() == "numpy"


def test_env_var_cupy_is_used_when_nothing_else_chose(monkeypatch, with_gpu) -> None:
    monkeypatch.setenv("DUALCONV_BACKEND", "cupy")
    assert dc.get_backend() == "cupy"
    dc.set_backend("numpy")  # an explicit choice wins over the environment
    assert dc.get_backend() == "numpy"


def test_env_var_is_read_at_resolution_time(monkeypatch, with_gpu) -> None:
    assert dc.get_backend() == "numpy"
    monkeypatch.setenv("DUALCONV_BACKEND", "cupy")
    assert dc.get_backend() == "cupy"
    with dc.use_backend("numpy"):
        assert dc.get_backend() == "numpy"


def test_env_var_auto(monkeypatch, without_cupy) -> None:
    monkeypatch.setenv("DUALCONV_BACKEND", "auto")
    assert dc.get_backend() == "numpy"


def test_env_var_cupy_without_cupy_is_a_clear_error(monkeypatch, without_cupy) -> None:
    monkeypatch.setenv("DUALCONV_BACKEND", "cupy")
    with pytest.raises(RuntimeError, match=r"backend 'cupy' requested: CuPy is not installed"):
        dc.get_backend()


def test_env_var_unknown_name(monkeypatch) -> None:
    monkeypatch.setenv("DUALCONV_BACKEND", "jax")
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'jax'"):
        dc.get_backend()


# -- auto and gpu_available -------------------------------------------------------------

def test_auto_picks_numpy_here() -> None:
    if dc.gpu_available():
        pytest.skip("a usable GPU is present")
    assert dc.set_backend("auto") == "numpy"
    assert dc.get_backend() == "numpy"


def test_auto_picks_numpy_without_cupy_and_cupy_with_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(backend, "_import_cupy", lambda: None)
    assert dc.set_backend("auto") == "numpy"
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake_cupy(0))
    assert dc.set_backend("auto") == "numpy"
    from dualconv.testing import fake_cupy as emulated
    monkeypatch.setattr(backend, "_import_cupy", lambda: emulated)
    assert dc.set_backend("auto") == "cupy"


def test_gpu_available_is_false_here() -> None:
    try:
        import cupy  # noqa: F401
    except Exception:
        assert dc.gpu_available() is False
    else:
        pytest.skip("CuPy is installed; the machine may have a GPU")


@pytest.mark.parametrize("import_cupy", [
    lambda: None,
    lambda: fake_cupy(0),
    lambda: fake_cupy(error=RuntimeError("CUDA driver version is insufficient")),
    lambda: (_ for _ in ()).throw(OSError("libcuda.so: cannot open shared object file")),
    lambda: types.SimpleNamespace(),  # a broken module: no cuda attribute at all
], ids=["no-cupy", "zero-devices", "device-count-raises", "import-raises", "broken-module"])
def test_gpu_available_never_raises(monkeypatch, import_cupy) -> None:
    monkeypatch.setattr(backend, "_import_cupy", import_cupy)
    assert dc.gpu_available() is False


def test_gpu_available_true_with_a_device(with_gpu) -> None:
    assert dc.gpu_available() is True


def test_auto_skips_a_gpu_that_cannot_compile_kernels(monkeypatch) -> None:
    """A device is found but the first compile fails (e.g. no CUDA headers): "auto" says numpy."""
    from dualconv.testing import fake_cupy as emulated

    class NoHeaders:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Failed to find CUDA headers; pip install cupy-cuda12x[ctk]")
    broken = types.SimpleNamespace(**{n: getattr(emulated, n) for n in ("cuda", "zeros", "float32")},
                                   RawModule=NoHeaders)
    monkeypatch.setattr(backend, "_import_cupy", lambda: broken)
    assert dc.gpu_available() is False
    assert "cannot compile or run a kernel" in backend.cupy_problem()
    assert dc.set_backend("auto") == "numpy"
    with pytest.raises(RuntimeError, match=r"backend 'cupy' requested: .*Failed to find CUDA headers"):
        dc.set_backend("cupy")


def test_gpu_check_runs_once_per_process(monkeypatch, with_gpu) -> None:
    from dualconv.testing import fake_cupy as emulated
    compiled = []
    real = emulated.RawModule
    monkeypatch.setattr(emulated, "RawModule", lambda *a, **k: compiled.append(1) or real(*a, **k))
    for _ in range(3):
        assert dc.gpu_available()
        backend.xp_for("cupy")
    assert len(compiled) == 1


# -- arrays and models ---------------------------------------------------------------

def test_array_helpers_on_numpy() -> None:
    x = np.arange(6.0).reshape(2, 3)
    assert backend.backend_of(x) == "numpy"
    assert backend.to_backend(x, "numpy") is x  # no copy when it need not move
    assert dc.asnumpy(x) is x
    assert backend.get_array_module(x) is np
    assert backend.xp_for("numpy") is np
    with pytest.raises(ValueError, match=r"backend must be 'numpy' or 'cupy', got 'gpu'"):
        backend.to_backend(x, "gpu")


def test_model_to_numpy() -> None:
    model = dc.Sequential([dc.Dense(3, 2), dc.ReLU()], seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    before = model.forward(x)
    assert model.to("numpy") is model
    assert model.backend == "numpy"
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    assert_array_equal(model.forward(x), before)


def test_model_to_cupy_here_is_a_clear_error() -> None:
    if dc.gpu_available():
        pytest.skip("a usable GPU is present")
    model = dc.Sequential([dc.Dense(3, 2)], seed=0)
    with pytest.raises(RuntimeError, match=r"backend 'cupy' requested: CuPy is (not installed|installed but no GPU)"):
        model.to("cupy")
    assert isinstance(model.layers[0].params["weight"], np.ndarray)


def test_model_to_unknown_backend() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of"):
        dc.Sequential([dc.Dense(3, 2)]).to("tpu")


def test_new_models_go_to_the_current_backend(with_gpu) -> None:
    """Sequential records the backend current at construction (names only, no arrays made)."""
    with dc.use_backend("numpy"):
        assert dc.Sequential([dc.ReLU()]).backend == "numpy"
    dc.set_backend("numpy")
    assert dc.Sequential([dc.ReLU()]).backend == "numpy"
