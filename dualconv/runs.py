"""A training run on disk: its directory, its settings and its metrics.json.

``dualconv train --out DIR`` writes, in DIR: checkpoint.npz after every epoch,
model.npz (final weights), metrics.json and, with matplotlib, the plots. Without
``--out`` a new directory ``runs/<dataset>-<model>-<n>`` is made, so no run is
ever written over another.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .augment import parse_augment
from .backend import device_name, versions
from .models import TRAINING_DEFAULTS

CHECKPOINT = "checkpoint.npz"
MODEL_FILE = "model.npz"
METRICS = "metrics.json"
PLOTS = ("training_curves.png", "filters.png")
RUN_FILES = (MODEL_FILE, CHECKPOINT, METRICS)  # any of them means the directory holds a run

# Training settings that a resumed run must share with the run it continues
# (``lr`` may change on resume). Their argparse default is None, so an explicit
# value can be told from a default.
CONFIG_DEFAULTS: dict[str, Any] = {
    "dataset": "mnist",
    "model": None,  # per dataset, see DEFAULT_MODEL
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": None,  # per optimizer, see DEFAULT_LR
    "momentum": 0.9,
    "nesterov": False,
    "lr_decay": 1.0,
    "seed": 0,
    "limit": None,
    "schedule": "step",  # recipe.SCHEDULES
    "warmup": 0.25,
    "anneal": "cos",  # onecycle's curve up to the peak and down from it: ANNEALS (None: not onecycle)
    "weight_decay": 0.0,
    "augment": None,  # "shift=K"
}
SCHEDULES = ("step", "onecycle", "cosine")  # see recipe.schedule
ANNEALS = ("cos", "linear")  # schedules.OneCycleLR's anneal_strategy
# The per-batch schedules are planned over the run's --epochs, which a resume must keep.
PER_BATCH_SCHEDULES = ("onecycle", "cosine")
# The learning rate trades speed for stability: the one that gave LeNet the best test
# accuracy after one epoch of MNIST at batch 64 (benchmarks/README.md, "default learning rate").
DEFAULT_LR = {"sgd": 0.02, "adam": 1e-3}
# LeNet needs 28x28 inputs; on the 8x8 digits the one-layer CNN (weidman) trains instead.
DEFAULT_MODEL = {"mnist": "lenet", "fashion-mnist": "lenet", "digits": "weidman"}


class SettingsError(ValueError):
    """Settings that cannot work together; the message names the options."""


def holds_run(directory: Path) -> list[str]:
    """The run files already in ``directory`` (empty when it holds no run)."""
    return [name for name in RUN_FILES if (directory / name).exists()]


def new_run_dir(root: Path, dataset: str, model: str) -> Path:
    """Create and return ``root/<dataset>-<model>-<n>`` with the first n >= 1 not taken."""
    root.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name.rsplit("-", 1)[1]) for p in root.glob(f"{dataset}-{model}-*")
                 if p.name.rsplit("-", 1)[1].isdigit()), default=0)
    while True:
        path = root / f"{dataset}-{model}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def clear_run(directory: Path) -> None:
    """Remove an earlier run's files (for --overwrite); other files are left alone."""
    for name in (*RUN_FILES, *PLOTS):
        (directory / name).unlink(missing_ok=True)
    for stale in directory.glob(".*.tmp"):  # left by a run killed while writing
        stale.unlink()


def settings(explicit: dict[str, Any], saved: dict[str, Any] | None, done_epochs: int = 0,
             epochs: int | None = None) -> dict[str, Any]:
    """The training settings: explicit options, else the checkpoint's, else the defaults.

    On resume every explicit option must equal the checkpoint's, except ``lr``:
    with ``schedule`` "step" a new ``--lr`` is the rate for the next epoch, so the
    stored base rate becomes lr / lr_decay ** done_epochs; with a per-batch schedule
    it is the new peak. A per-batch schedule is planned over ``epochs`` (kept in
    the settings as "schedule_epochs"), so a resume must ask for the same total.
    """
    if saved is not None:
        saved = {**CONFIG_DEFAULTS, **saved}  # a checkpoint from before an option existed
        _check_anneal(explicit, saved["schedule"])
        clashes = [f"--{k.replace('_', '-')} {v} (checkpoint: {saved[k]})"
                   for k, v in explicit.items() if k != "lr" and v != saved[k]]
        if clashes:
            raise SettingsError("--resume continues with the checkpoint's settings, but these differ: "
                                + ", ".join(clashes) + ". Drop them, or train into a new --out.")
        config = dict(saved)
        planned = config.get("schedule_epochs")
        if planned is not None and epochs is not None and epochs != planned:
            raise SettingsError(f"--epochs {epochs}: --schedule {config['schedule']} was planned over "
                                f"--epochs {planned} when this run started; resume with --epochs {planned}")
        if "lr" in explicit:
            per_batch = config["schedule"] in PER_BATCH_SCHEDULES
            config["lr"] = explicit["lr"] if per_batch else explicit["lr"] / config["lr_decay"] ** done_epochs
        return config
    config = {**CONFIG_DEFAULTS, **explicit}
    if config["model"] is None:
        config["model"] = DEFAULT_MODEL[config["dataset"]]
    tuned = TRAINING_DEFAULTS.get(config["model"], {})  # a model's own defaults (lenet-bn)
    config.update({k: v for k, v in tuned.items() if k != "lr" and k not in explicit})
    _check_anneal(explicit, config["schedule"])
    if config["schedule"] != "onecycle":
        config["anneal"] = None  # recorded only where it shapes the rate
    if config["lr"] is None:
        config["lr"] = tuned.get("lr", DEFAULT_LR)[config["optimizer"]]
    if config["optimizer"] != "sgd":  # Adam keeps moments of its own: no momentum to record
        config["momentum"] = config["nesterov"] = None
    if config["schedule"] in PER_BATCH_SCHEDULES:
        config["schedule_epochs"] = epochs
    return config


def _check_anneal(explicit: dict[str, Any], schedule: str) -> None:
    if "anneal" in explicit and schedule != "onecycle":
        raise SettingsError(f"--anneal applies to --schedule onecycle only, not {schedule}; "
                            f"drop --anneal or add --schedule onecycle")


def check_settings(explicit: dict[str, Any]) -> None:
    """Reject out-of-range or conflicting options before anything is loaded."""
    momentum, decay = explicit.get("momentum"), explicit.get("lr_decay")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise SettingsError(f"--momentum must be in [0, 1), got {momentum:g}")
    if momentum is not None and explicit.get("optimizer", "sgd") != "sgd":
        raise SettingsError(f"--momentum applies to --optimizer sgd only, not {explicit['optimizer']} "
                            f"(Adam has its own moment estimates); drop --momentum")
    if explicit.get("nesterov") and (explicit.get("optimizer", "sgd") != "sgd" or momentum == 0.0):
        raise SettingsError("--nesterov needs --optimizer sgd with a --momentum above 0")
    if decay is not None and not (0.0 < decay <= 1.0 and math.isfinite(decay)):
        raise SettingsError(f"--lr-decay must be in (0, 1] (the factor applied after each epoch), got {decay:g}")
    if decay is not None and explicit.get("schedule", "step") != "step":
        raise SettingsError(f"--lr-decay applies to --schedule step only, not {explicit['schedule']} "
                            f"(which sets the rate itself); drop --lr-decay")
    warmup, weight_decay = explicit.get("warmup"), explicit.get("weight_decay")
    if warmup is not None and not 0.0 <= warmup < 1.0:
        raise SettingsError(f"--warmup must be in [0, 1) (the share of the steps spent rising to --lr), "
                            f"got {warmup:g}")
    if weight_decay is not None and not (0.0 <= weight_decay and math.isfinite(weight_decay)):
        raise SettingsError(f"--weight-decay must be a number >= 0, got {weight_decay:g}")
    seed = explicit.get("seed")
    if seed is not None and seed < 0:
        raise SettingsError(f"--seed must be an integer >= 0, got {seed}")
    if explicit.get("augment") is not None:
        try:
            parse_augment(explicit["augment"])
        except ValueError as exc:
            raise SettingsError(str(exc)) from None


def metrics_document(config: dict[str, Any], backend: str, history: dict[str, list], result: dict[str, Any],
                     n_train: int, n_test: int, wall: float, start_epoch: int) -> dict[str, Any]:
    """What metrics.json holds: settings, history, final test scores, timings, machine and versions."""
    seconds = float(sum(history.get("seconds", [])))
    epochs = len(history.get("loss", []))
    return {
        "dataset": config["dataset"],
        "model": config["model"],
        "config": config,
        "epochs": epochs,
        "train_images": n_train,
        "test_images": n_test,
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "confusion_matrix": result["confusion_matrix"],
        "history": history,
        "seconds": seconds,
        "images_per_second": n_train * epochs / seconds if seconds > 0 else None,
        "wall_seconds_this_run": wall,
        "resumed_after_epoch": start_epoch or None,
        "backend": backend,
        "device": device_name(backend),
        "versions": versions(),
    }
