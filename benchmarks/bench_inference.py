"""Inference of the bundled models: the outputs of 1000 images, as predict makes them.

Models: ``lenet`` and ``weidman`` (as in bench_training.py), on random
MNIST-shaped data. dualconv: ``model.predict(X)`` with its default batch (on the
CPU each batch in parts on the cores: dualconv/engine);
the torch peers: the same networks in eval mode under ``torch.inference_mode``, the
1000 images in one call (as benchmarks/lenet_vs_torch.py measures them).

Predict.time_predict               seconds for the 1000 images (GPU: synchronized)
Predict.track_images_per_second    1000 / median time, images/s
"""
from __future__ import annotations

from typing import Any, Callable

from .bench_training import MODELS, dualconv_model, torch_peer
from .common import BACKENDS, images_per_second, mnist_like, require, synchronizer, to_backend, warm_up

IMAGES = 1000
WARM_UP_SECONDS = 0.5


def make_predict(model_name: str, backend: str, images: int = IMAGES) -> Callable[[], Any]:
    """A zero-argument call that returns the model's outputs for ``images`` fixed images,
    warmed up (built, compiled, dualconv's worker process forked)."""
    mod = require(backend)
    X = mnist_like(images)[0]
    if backend in ("numpy", "cupy"):
        model = dualconv_model(model_name, backend)
        xb = to_backend(X, backend)

        def predict() -> Any:
            return model.predict(xb)
    else:
        torch = mod
        net = torch_peer(torch, model_name, backend).eval()
        xb = to_backend(X, backend)

        def predict() -> Any:
            with torch.inference_mode():
                return net(xb)
    warm_up(lambda i: predict(), synchronizer(backend), WARM_UP_SECONDS)
    return predict


class Predict:
    params = [MODELS, BACKENDS]
    param_names = ["model", "backend"]
    sample_time = 0.05
    repeat = (3, 10, 4.0)
    warmup_time = 0.1

    def setup(self, model: str, backend: str) -> None:
        self.predict = make_predict(model, backend)
        self.sync = synchronizer(backend)

    def time_predict(self, model: str, backend: str) -> None:
        self.predict()
        self.sync()

    def track_images_per_second(self, model: str, backend: str) -> float:
        return images_per_second(self.predict, self.sync, IMAGES)

    track_images_per_second.unit = "images/s"  # type: ignore[attr-defined]
