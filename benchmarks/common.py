"""Shared setup for the asv suite: backends, skips, data, timing helpers.

Backends (the ``backend`` parameter of every benchmark):

* ``numpy``      dualconv on the CPU (NumPy kernels);
* ``cupy``       dualconv on the GPU (CuPy + the CUDA kernels in kernels/*.cu);
* ``torch``      the peer on the CPU: PyTorch with ``torch.set_num_threads(2)``;
* ``torch-cuda`` the peer on the GPU: PyTorch + cuDNN.

A backend that cannot run here (no CuPy, no GPU, no PyTorch) is skipped by
raising NotImplementedError in ``setup`` (asv reports it as skipped, "n/a"),
never failed. PyTorch and CuPy are imported only inside ``setup`` so that the
peak-memory figures of the NumPy benchmarks do not include them.

GPU rules: kernels are compiled and warmed in
``setup``; a timed body that launches GPU work synchronizes before it returns;
bandwidth figures come from ``cupyx.profiler.benchmark`` (CUDA events).
"""
from __future__ import annotations

import glob
import importlib.metadata
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

try:
    import dualconv  # noqa: F401
except ImportError:  # --python=same in an environment without dualconv installed: use this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import dualconv  # noqa: F401

BACKENDS = ["numpy", "cupy", "torch", "torch-cuda"]
"""Every backend a benchmark may be parameterized over."""

DUALCONV_BACKENDS = ["numpy", "cupy"]
"""dualconv alone (benchmarks with no PyTorch counterpart)."""

GPU_BACKENDS = ["cupy", "torch-cuda"]

TORCH_THREADS = 2
"""PyTorch's CPU thread count: the 2 cores of the machines this suite is measured on."""


# ------------------------------------------------------------------ backends

def _no_gpu_device() -> bool:
    """True when this machine plainly has no GPU device node (a cheap test before importing torch/cupy)."""
    return not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg") or os.path.isdir("/proc/driver/nvidia"))


def _torch_is_cpu_build() -> bool:
    """True for a CPU-only PyTorch wheel (version "x.y.z+cpu"), known without importing torch."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False


def require(backend: str) -> Any:
    """The module a backend computes with, or NotImplementedError (asv: skip) when it cannot run.

    numpy -> numpy, cupy -> cupy, torch / torch-cuda -> torch (configured).
    GPU backends are ruled out before any import when there is no GPU device
    node, so their skips cost next to nothing.
    """
    if backend == "numpy":
        return np
    if backend in GPU_BACKENDS and _no_gpu_device():
        raise NotImplementedError(f"{backend}: no GPU device on this machine")
    if backend == "torch-cuda" and _torch_is_cpu_build():
        raise NotImplementedError("torch-cuda: the installed PyTorch is a CPU-only build")
    if backend == "cupy":
        import dualconv as dc
        if not dc.gpu_available():
            from dualconv.backend import cupy_problem
            raise NotImplementedError(f"cupy backend: {cupy_problem()}")
        import cupy
        return cupy
    if backend in ("torch", "torch-cuda"):
        try:
            import torch
        except ImportError as exc:
            raise NotImplementedError(f"PyTorch is not installed: {exc}") from None
        if backend == "torch":
            torch.set_num_threads(TORCH_THREADS)
        else:
            if not torch.cuda.is_available():
                raise NotImplementedError("torch-cuda: torch.cuda.is_available() is False")
            torch.backends.cudnn.enabled = True
            torch.backends.cudnn.benchmark = True  # algorithm search happens in the warm-up, in setup
        return torch
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def require_cupy_profiler() -> Any:
    """cupyx.profiler (for GPU bandwidth), or NotImplementedError when CuPy/GPU is missing."""
    require("cupy")
    import cupyx.profiler
    return cupyx.profiler


def synchronizer(backend: str) -> Callable[[], None]:
    """A function that waits for the backend's queued GPU work (a no-op on the CPU)."""
    if backend == "cupy":
        import cupy
        return cupy.cuda.Device().synchronize
    if backend == "torch-cuda":
        import torch
        return torch.cuda.synchronize
    return lambda: None


def to_backend(array: np.ndarray, backend: str) -> Any:
    """A NumPy array on the backend: numpy / cupy array or torch tensor."""
    if backend == "numpy":
        return array
    if backend == "cupy":
        import cupy
        return cupy.asarray(array)
    import torch
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.cuda() if backend == "torch-cuda" else tensor


# ------------------------------------------------------------------ data

def rand(shape: tuple[int, ...], seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """Uniform [-1, 1) float data, deterministic."""
    rng = np.random.default_rng(seed)
    return (rng.random(shape, dtype=np.float32) * 2 - 1).astype(dtype, copy=False)


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 28, 28) float32 images in [0, 1) and (n,) int64 labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


# ------------------------------------------------------------------ timing

def warm_up(call: Callable[[int], Any], sync: Callable[[], None], seconds: float, calls: int = 3) -> None:
    """call(0), call(1), ... (each followed by sync) for ``calls`` calls and ``seconds`` at
    least, so that what follows is timed in the steady state: caches, allocators, lazy
    layers, compiled kernels and library plans, and on the CPU dualconv's worker process,
    forked at the first batch in parts (after a fork OpenBLAS restarts its thread pool in
    the caller, whose new thread spins for about 0.1 s)."""
    i, start = 0, time.perf_counter()
    while i < calls or time.perf_counter() - start < seconds:
        call(i)
        sync()
        i += 1


def images_per_second(step: Callable[[], None], sync: Callable[[], None], batch: int,
                      min_steps: int = 3, min_seconds: float = 0.25, max_steps: int = 200) -> float:
    """batch / median seconds per step, over at least ``min_steps`` and ``min_seconds``."""
    times: list[float] = []
    total = 0.0
    while len(times) < max_steps and (len(times) < min_steps or total < min_seconds):
        sync()
        start = time.perf_counter()
        step()
        sync()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        total += elapsed
    return batch / statistics.median(times)


def gpu_seconds(fn: Callable[[], Any], n_repeat: int = 50, n_warmup: int = 5) -> float:
    """Median GPU time of ``fn`` in seconds, from cupyx.profiler.benchmark (CUDA events after sync)."""
    profiler = require_cupy_profiler()
    result = profiler.benchmark(fn, n_repeat=n_repeat, n_warmup=n_warmup)
    return float(np.median(result.gpu_times))


def copy_gb_per_s(nbytes: int, n_repeat: int = 50) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written (2 * nbytes)."""
    import cupy
    nbytes = max(int(nbytes), 1 << 20)
    src = cupy.ones(nbytes, dtype=cupy.uint8)
    dst = cupy.empty_like(src)

    def copy() -> None:
        dst.data.copy_from_device_async(src.data, nbytes)

    return 2 * nbytes / gpu_seconds(copy, n_repeat=n_repeat) / 1e9
