"""From a run's settings to a ready Trainer: the model, its optimizer, the learning-rate
schedule and the augmentation (what ``dualconv train`` builds from its options).

Settings are the dict ``runs.settings`` returns. ``schedule`` "step" multiplies the
rate by ``lr_decay`` after each epoch; "onecycle" and "cosine" are stepped after every
batch and planned over the whole run, so they need the run's epoch count and the
number of training images; ``lr`` is their peak and ``warmup`` the share of the
steps spent rising to it.
"""
from __future__ import annotations

from typing import Any

from .augment import Shift, parse_augment
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .models import MODELS
from .optim import SGD, Adam, ExponentialLR, LRSchedule, Optimizer
from .schedules import OneCycleLR, WarmupCosineLR
from .trainer import Trainer, batch_starts



def make_model(config: dict[str, Any], image_shape: tuple[int, ...], num_classes: int) -> Sequential:
    """config["model"] with config["seed"], built for (C, H, W) inputs.

    Raises ValueError when the model cannot take ``image_shape`` (the message says why).
    """
    model = MODELS[config["model"]](num_classes=num_classes, seed=config["seed"])
    model.build((1, *image_shape))
    return model


def build_trainer(config: dict[str, Any], model: Sequential, epochs: int, n_train: int,
                  progress: bool = True) -> Trainer:
    """A Trainer for ``model`` with the configured optimizer and schedule, the schedule
    planned over ``epochs`` epochs of ``n_train`` images when it is stepped per batch."""
    decay = config.get("weight_decay", 0.0)
    if config["optimizer"] == "sgd":
        optimizer: Optimizer = SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                   nesterov=bool(config.get("nesterov")), weight_decay=decay)
    else:
        optimizer = Adam(model.parameters(), lr=config["lr"], weight_decay=decay)
    steps = epochs * len(batch_starts(n_train, config["batch_size"], model))
    return Trainer(model, SoftmaxCrossEntropy(), optimizer, progress=progress,
                   scheduler=schedule(config, optimizer, steps))


def schedule(config: dict[str, Any], optimizer: Optimizer, total_steps: int) -> LRSchedule:
    """The schedule named by config["schedule"], over ``total_steps`` optimizer steps when per batch."""
    name = config.get("schedule", "step")
    warmup = config.get("warmup", 0.25)
    if name == "onecycle":
        return OneCycleLR(optimizer, config["lr"], total_steps, pct_start=warmup,
                          anneal_strategy=config.get("anneal", "cos"))
    if name == "cosine":
        return WarmupCosineLR(optimizer, total_steps, warmup_steps=min(int(warmup * total_steps), total_steps - 1))
    return ExponentialLR(optimizer, gamma=config.get("lr_decay", 1.0))


def augmentation(config: dict[str, Any]) -> Shift | None:
    """config["augment"] ("shift=K" or None) as the object Trainer.fit takes."""
    text = config.get("augment")
    return None if text is None else parse_augment(text)
