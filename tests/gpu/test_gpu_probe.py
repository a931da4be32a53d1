"""tests/gpu on a machine with a CUDA device that the CuPy backend cannot use: every test
fails and says why (conftest.gpu_state), instead of passing on the stand-in. A device
counts whether CuPy reports it or only the NVIDIA driver lists it (backend.cuda_device_present)."""
from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest

from dualconv import backend

pytestmark = pytest.mark.gpu


def _conftest() -> types.ModuleType:
    """A fresh copy of tests/gpu/conftest.py, whose gpu_state() reads the backend as patched."""
    spec = importlib.util.spec_from_file_location("gpu_conftest_copy", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """Set what the backend sees: CuPy (None: not installed) and the driver's GPU list."""
    monkeypatch.setattr(backend, "_checked", {})
    devices = tmp_path / "gpus"
    devices.mkdir()
    monkeypatch.setattr(backend, "NVIDIA_DEVICES", str(devices))

    def set_up(cupy: object | None, driver_gpus: int) -> None:
        monkeypatch.setattr(backend, "_import_cupy", lambda: cupy)
        for i in range(driver_gpus):
            (devices / f"0000:0{i}:00.0").mkdir()
    return set_up


def _cupy_without_headers(devices: int) -> types.SimpleNamespace:
    def no_headers(*args, **kwargs):
        raise RuntimeError("Failed to find CUDA headers")
    runtime = types.SimpleNamespace(getDeviceCount=lambda: devices)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), RawModule=no_headers,
                                 zeros=lambda *a, **k: None, float32="float32")


def test_a_gpu_whose_probe_compile_fails_fails_the_tests(machine):
    machine(_cupy_without_headers(1), 0)
    assert backend.cuda_device_present() and not backend.gpu_available()
    real, broken = _conftest().gpu_state()
    assert not real
    assert "this machine has a CUDA device but the CuPy backend cannot use it" in broken
    assert "Failed to find CUDA headers" in broken and "DUALCONV_EMULATE_GPU=1" in broken


def test_a_gpu_the_driver_lists_without_cupy_fails_the_tests(machine):
    machine(None, 1)
    assert backend.cuda_device_present()
    assert "CuPy is not installed" in _conftest().gpu_state()[1]


@pytest.mark.parametrize("cupy", [None, _cupy_without_headers(0)], ids=["no cupy", "cupy, no device"])
def test_without_a_gpu_the_tests_run_on_the_stand_in(machine, cupy):
    machine(cupy, 0)
    assert not backend.cuda_device_present()
    assert _conftest().gpu_state() == (False, None)


def test_the_stand_in_asked_for_is_never_a_broken_gpu(machine):
    from dualconv.testing import fake_cupy
    machine(fake_cupy, 1)  # DUALCONV_EMULATE_GPU=1 on a GPU machine
    assert _conftest().gpu_state() == (False, None)
