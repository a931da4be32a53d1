"""One training step (forward, loss, backward, SGD with momentum) of the bundled models.

Models: ``lenet`` (LeNet, dualconv.models.lenet) and ``weidman``
(the one-layer CNN, dualconv.models.weidman), at batch 64 and 256, on
random MNIST-shaped data. The torch peers are the same networks in
torch.nn (as in benchmarks/lenet_vs_torch.py) with the same optimizer.

TrainStep.time_train_step           seconds per step (GPU: synchronized)
TrainStep.track_images_per_second   batch / median step time, images/s
TrainStep.peakmem_train_step        peak host RSS of a process that built the model and ran steps
GpuMemory.track_device_peak_mib     GPU only: device memory a step needs (MiB)
"""
from __future__ import annotations

from typing import Any, Callable

from .common import (BACKENDS, GPU_BACKENDS, images_per_second, mnist_like, require, synchronizer, to_backend,
                     warm_up)

WARM_UP_SECONDS = 0.5

MODELS = ["lenet", "weidman"]
BATCHES = [64, 256]


def torch_model(name: str) -> Any:
    from torch import nn
    if name == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Linear(400, 84), nn.ReLU(), nn.Linear(84, 10))
    if name == "weidman":
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.Tanh(), nn.Flatten(), nn.Dropout(0.2),
            nn.Linear(32 * 28 * 28, 10))
    raise ValueError(name)


def dualconv_model(model_name: str, backend: str) -> Any:
    """A bundled dualconv model, seed 0, built for and moved to ``backend`` ("numpy" or "cupy")."""
    import dualconv as dc
    from dualconv import models
    with dc.use_backend(backend):
        model = getattr(models, model_name)(seed=0)
    return model.to(backend)


def torch_peer(torch: Any, model_name: str, backend: str) -> Any:
    """The torch twin of a bundled model (torch_model), torch's seed 0, on the device
    ``backend`` names ("torch": the CPU, "torch-cuda": the GPU)."""
    torch.manual_seed(0)
    return torch_model(model_name).to("cuda" if backend == "torch-cuda" else "cpu")


def make_step(model_name: str, backend: str, batch: int) -> Callable[[], None]:
    """A zero-argument training step on one fixed batch, warmed up (built, compiled)."""
    mod = require(backend)
    X, y = mnist_like(batch)
    if backend in ("numpy", "cupy"):
        import dualconv as dc
        model = dualconv_model(model_name, backend).train()
        trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                             dc.SGD(model.parameters(), lr=0.01, momentum=0.9), progress=False)
        trainer.loss.check_labels = False  # as Trainer.fit does: no label check (a GPU sync) per step
        xb, yb = to_backend(X, backend), to_backend(y, backend)

        def step() -> None:
            trainer.train_step(xb, yb)
    else:
        torch = mod
        model = torch_peer(torch, model_name, backend).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        xb, yb = to_backend(X, backend), to_backend(y, backend)

        def step() -> None:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
    # lazy layers, GPU kernels, cuDNN's search, optimizer state, dualconv's worker process:
    # the same warm-up for every backend
    warm_up(lambda i: step(), synchronizer(backend), WARM_UP_SECONDS)
    return step


class TrainStep:
    params = [MODELS, BACKENDS, BATCHES]
    param_names = ["model", "backend", "batch"]
    sample_time = 0.05
    repeat = (3, 10, 4.0)
    warmup_time = 0.1

    def setup(self, model: str, backend: str, batch: int) -> None:
        self.step = make_step(model, backend, batch)
        self.sync = synchronizer(backend)

    def time_train_step(self, model: str, backend: str, batch: int) -> None:
        self.step()
        self.sync()

    def track_images_per_second(self, model: str, backend: str, batch: int) -> float:
        return images_per_second(self.step, self.sync, batch)

    track_images_per_second.unit = "images/s"  # type: ignore[attr-defined]

    def peakmem_train_step(self, model: str, backend: str, batch: int) -> None:
        self.step()
        self.sync()


class GpuMemory:
    """Device memory of a training step, GPU backends only (host RSS says little there).

    cupy: bytes held by CuPy's default memory pool after the pool is emptied of
    free blocks and one step runs (the pool keeps its high-water mark);
    torch-cuda: torch.cuda.max_memory_allocated over one step.
    """

    params = [MODELS, GPU_BACKENDS, BATCHES]
    param_names = ["model", "backend", "batch"]
    unit = "MiB"
    rounds = 1

    def setup(self, model: str, backend: str, batch: int) -> None:
        self.step = make_step(model, backend, batch)
        self.sync = synchronizer(backend)

    def track_device_peak_mib(self, model: str, backend: str, batch: int) -> float:
        self.sync()
        if backend == "cupy":
            import cupy
            pool = cupy.get_default_memory_pool()
            pool.free_all_blocks()
            self.step()
            self.sync()
            return pool.total_bytes() / 2**20
        import torch
        torch.cuda.reset_peak_memory_stats()
        self.step()
        self.sync()
        return torch.cuda.max_memory_allocated() / 2**20
