"""Ready-made models (LeNet, LeNet with batch normalization, the one-layer CNN
"weidman", an MLP, and the two MNIST recipes "fast" and "best"), with lazy input sizes."""
from __future__ import annotations

from typing import Any

import numpy as np

from .layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Tanh
from .model import Sequential


def lenet(num_classes: int = 10, seed: int | None = None, dtype: Any = np.float32) -> Sequential:
    """A modern LeNet-5: two conv blocks (ReLU, max-pool), then 84 -> classes.

    (N, 1, 28, 28) -> conv 6@5x5 pad 2 -> pool -> conv 16@5x5 -> pool -> 84 -> logits.
    """
    return Sequential([
        Conv2D(None, 6, 5, padding=2), ReLU(), MaxPool2D(2, 2),
        Conv2D(None, 16, 5), ReLU(), MaxPool2D(2, 2),
        Flatten(), Dense(None, 84), ReLU(), Dense(None, num_classes),
    ], seed=seed, dtype=dtype)


def lenet_bn(num_classes: int = 10, seed: int | None = None, dtype: Any = np.float32) -> Sequential:
    """LeNet with batch normalization after each convolution and after the hidden dense layer.

    (N, 1, 28, 28) -> conv 6@5x5 pad 2 -> BN -> pool -> conv 16@5x5 -> BN -> pool
    -> 84 -> BN -> dropout 0.25 -> logits. The layers before a BatchNorm have no
    bias (its own bias takes that role).
    """
    return Sequential([
        Conv2D(None, 6, 5, padding=2, bias=False), BatchNorm2D(), ReLU(), MaxPool2D(2, 2),
        Conv2D(None, 16, 5, bias=False), BatchNorm2D(), ReLU(), MaxPool2D(2, 2),
        Flatten(), Dense(None, 84, bias=False), BatchNorm1D(), ReLU(), Dropout(0.25), Dense(None, num_classes),
    ], seed=seed, dtype=dtype)


def weidman(num_classes: int = 10, seed: int | None = None, dtype: Any = np.float32) -> Sequential:
    """Weidman's one-layer CNN: conv 32@5x5 "same", tanh, dropout (keep 0.8), dense -> classes.

    (N, C, H, W) -> conv 32@5x5 "same" -> tanh -> flatten -> dropout 0.2 -> logits (N, classes).
    """
    return Sequential([
        Conv2D(None, 32, 5, padding="same"), Tanh(), Flatten(), Dropout(0.2),
        Dense(None, num_classes),
    ], seed=seed, dtype=dtype)


def mlp(num_classes: int = 10, hidden: int = 128, seed: int | None = None, dtype: Any = np.float32) -> Sequential:
    """A one-hidden-layer MLP: flatten -> hidden (ReLU) -> classes (784-128-10 on MNIST)."""
    return Sequential([Flatten(), Dense(None, hidden), ReLU(), Dense(None, num_classes)],
                      seed=seed, dtype=dtype)


def fast(num_classes: int = 10, seed: int | None = None, dtype: Any = np.float32) -> Sequential:
    """The one-epoch MNIST recipe's network: LeNet's shape, wider, without BatchNorm.

    (N, 1, 28, 28) -> conv 8@5x5 pad 2 -> ReLU -> pool -> conv 24@5x5 -> ReLU -> pool
    -> 128 -> ReLU -> logits. No layer mixes samples, so the CPU engine splits every
    batch over the cores (a BatchNorm would keep each batch on one core).
    """
    return Sequential([
        Conv2D(None, 8, 5, padding=2), ReLU(), MaxPool2D(2, 2),
        Conv2D(None, 24, 5), ReLU(), MaxPool2D(2, 2),
        Flatten(), Dense(None, 128), ReLU(), Dense(None, num_classes),
    ], seed=seed, dtype=dtype)


def best(num_classes: int = 10, seed: int | None = None, dtype: Any = np.float32) -> Sequential:
    """The ten-epoch MNIST recipe's network: ``fast`` with more channels (16 and 32).

    (N, 1, 28, 28) -> conv 16@5x5 pad 2 -> ReLU -> pool -> conv 32@5x5 -> ReLU -> pool
    -> 128 -> ReLU -> logits; trained with the one-cycle schedule and random shifts
    that TRAINING_DEFAULTS["best"] name. No BatchNorm, for the reason ``fast`` gives.
    """
    return Sequential([
        Conv2D(None, 16, 5, padding=2), ReLU(), MaxPool2D(2, 2),
        Conv2D(None, 32, 5), ReLU(), MaxPool2D(2, 2),
        Flatten(), Dense(None, 128), ReLU(), Dense(None, num_classes),
    ], seed=seed, dtype=dtype)


MODELS = {"lenet": lenet, "lenet-bn": lenet_bn, "weidman": weidman, "mlp": mlp, "fast": fast, "best": best}

# Training settings a model is tuned for, which ``dualconv train`` uses where the
# command line names none: {model name: {"lr": {optimizer: learning rate},
# "lr_decay": factor per epoch, "batch_size": samples, and any other setting of
# runs.CONFIG_DEFAULTS: "schedule", "warmup", "anneal", "weight_decay", "augment"}}. LeNet-BN takes
# a larger SGD step than plain LeNet and needs the decay to settle; "fast" and "best"
# are the MNIST recipes (one epoch to 99%, ten to 99.5%), whose lr is the one-cycle
# peak. The runs that chose these settings are in benchmarks/README.md, sections
# "LeNet-BN (`TRAINING_DEFAULTS` in `dualconv/models.py`)" and "MNIST recipes".
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "lenet-bn": {"lr": {"sgd": 0.05, "adam": 1e-3}, "lr_decay": 0.7, "batch_size": 32},
    "fast": {"lr": {"sgd": 0.1, "adam": 3e-3}, "batch_size": 64, "schedule": "onecycle", "warmup": 0.25,
             "anneal": "linear", "nesterov": True, "weight_decay": 5e-4, "augment": "shift=1"},
    "best": {"lr": {"sgd": 0.07, "adam": 3e-3}, "batch_size": 64, "schedule": "onecycle", "warmup": 0.25,
             "nesterov": True, "weight_decay": 5e-4, "augment": "shift=2"},
}
