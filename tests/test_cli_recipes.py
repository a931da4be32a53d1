"""The command line's schedules, weight decay and augmentation: an exact resume in the
middle of a one-cycle run, the settings a resume must keep, and one-line errors.
Everything runs on scikit-learn's 8x8 digits (offline, seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dualconv import checkpoint, cli
from dualconv.models import TRAINING_DEFAULTS

RECIPE = ["train", "--dataset", "digits", "--model", "weidman", "--limit", "300", "--no-progress",
          "--schedule", "onecycle", "--lr", "0.1", "--weight-decay", "1e-3", "--augment", "shift=1"]


def run_cli(*args: object) -> int:
    return cli.main([str(a) for a in args])


def weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_resume_in_the_middle_of_a_cycle_gives_identical_weights(tmp_path, monkeypatch):
    assert run_cli(*RECIPE, "--epochs", "3", "--out", tmp_path / "whole") == 0
    save = checkpoint.save_checkpoint

    def save_then_stop(*args, **kwargs):  # Ctrl-C right after the first checkpoint
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop)
    assert run_cli(*RECIPE, "--epochs", "3", "--out", tmp_path / "parts") == 130
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    assert checkpoint.load_checkpoint(tmp_path / "parts" / "checkpoint.npz").epoch == 1
    assert run_cli(*RECIPE, "--epochs", "3", "--out", tmp_path / "parts", "--resume") == 0
    whole, parts = weights(tmp_path / "whole" / "model.npz"), weights(tmp_path / "parts" / "model.npz")
    for key in whole:
        assert np.array_equal(whole[key], parts[key]), key
    config = json.loads((tmp_path / "parts" / "metrics.json").read_text())["config"]
    assert config["schedule"] == "onecycle" and config["schedule_epochs"] == 3 and config["augment"] == "shift=1"


def test_a_cycle_resumed_with_other_epochs_is_refused(tmp_path, capsys):
    assert run_cli(*RECIPE, "--epochs", "1", "--out", tmp_path) == 0
    assert run_cli(*RECIPE, "--epochs", "2", "--out", tmp_path, "--resume") == 1
    err = capsys.readouterr().err
    assert "error: --epochs 2: --schedule onecycle was planned over --epochs 1" in err


@pytest.mark.parametrize("option, message", [
    (["--augment", "flip"], "--augment takes shift=K (K pixels, an integer >= 0), got 'flip'"),
    (["--warmup", "1.5"], "--warmup must be in [0, 1)"),
    (["--weight-decay", "-1"], "--weight-decay must be a number >= 0, got -1"),
    (["--schedule", "cosine", "--lr-decay", "0.5"], "--lr-decay applies to --schedule step only, not cosine"),
    (["--anneal", "linear"], "--anneal applies to --schedule onecycle only, not step"),
    (["--model", "fast", "--schedule", "cosine", "--anneal", "cos"], "--anneal applies to --schedule onecycle only"),
])
def test_bad_recipe_options_are_one_line_errors(option, message, capsys):
    assert run_cli("train", "--dataset", "digits", "--no-progress", *option) == 1
    err = capsys.readouterr().err
    assert err.startswith("dualconv train: error: ") and message in err and "Traceback" not in err


def test_cosine_schedule_trains(tmp_path, capsys):
    assert run_cli(*RECIPE[:-6], "--schedule", "cosine", "--warmup", "0.1", "--epochs", "1", "--out", tmp_path) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_the_recipes_bring_their_settings():
    assert {"fast", "best"} <= set(TRAINING_DEFAULTS) and cli.build_parser()
    assert TRAINING_DEFAULTS["fast"]["schedule"] == TRAINING_DEFAULTS["best"]["schedule"] == "onecycle"
    assert TRAINING_DEFAULTS["best"]["augment"] == "shift=2"
    assert TRAINING_DEFAULTS["fast"]["augment"] == "shift=1" and TRAINING_DEFAULTS["fast"]["anneal"] == "linear"


# fast: conv 8 * 25 + 8, conv 24 * 8 * 25 + 24, dense 600 * 128 + 128, dense 128 * 10 + 10
@pytest.mark.parametrize("name, parameters", [("fast", 208 + 4_824 + 76_928 + 1_290), ("best", 117_066)])
def test_the_recipe_models_take_mnist_images(name, parameters):
    from dualconv.models import MODELS

    model = MODELS[name](seed=0)
    assert model.build((1, 1, 28, 28)) == (1, 10)
    assert sum(layer.num_parameters() for layer in model.layers) == parameters
    assert not any(layer.couples_samples for layer in model.layers)  # both cores share each batch


def test_an_adam_run_records_no_momentum():
    from dualconv.runs import settings
    adam = settings({"optimizer": "adam", "model": "fast"}, None, epochs=1)
    assert adam["momentum"] is None and adam["nesterov"] is None  # fast's Nesterov is SGD's
    sgd = settings({"model": "fast"}, None, epochs=1)
    assert sgd["momentum"] == 0.9 and sgd["nesterov"] is True


def test_a_linear_cycle_is_the_schedule_trained_and_recorded(tmp_path):
    """--anneal linear: the rate rises and falls linearly (OneCycleLR's anneal_strategy),
    recorded with the run; the recipe's rates are a linear one-cycle's, step by step; a
    schedule it does not shape records none."""
    from dualconv import recipe
    from dualconv.runs import settings
    from dualconv.schedules import OneCycleLR
    assert run_cli(*RECIPE, "--anneal", "linear", "--epochs", "1", "--out", tmp_path) == 0
    config = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert config["anneal"] == "linear"
    assert settings({"model": "fast"}, None, epochs=1)["anneal"] == "linear"
    assert settings({"model": "best"}, None, epochs=1)["anneal"] == "cos"
    assert settings({"model": "fast", "schedule": "cosine"}, None, epochs=1)["anneal"] is None
    made, oracle = _Rate(), _Rate()
    schedule = recipe.schedule({**config, "lr": 0.1}, made, 20)
    linear = OneCycleLR(oracle, 0.1, 20, pct_start=config["warmup"], anneal_strategy="linear")
    rates = []
    for _ in range(19):
        assert made.lr == oracle.lr
        rates.append(made.lr)
        schedule.step(), linear.step()
    assert rates[1] == pytest.approx(0.1 / 25 + (0.1 - 0.1 / 25) / 4)  # a quarter of the linear rise


def test_anneal_on_resume_follows_the_checkpoints_schedule(tmp_path, capsys):
    """--anneal with --resume: refused, as for a fresh run, where the checkpoint's schedule
    is not onecycle; a onecycle checkpoint from before the option resumes as cos."""
    step_run = ["train", "--dataset", "digits", "--model", "weidman", "--limit", "200", "--no-progress"]
    assert run_cli(*step_run, "--epochs", "1", "--out", tmp_path) == 0
    assert run_cli(*step_run, "--epochs", "2", "--anneal", "cos", "--out", tmp_path, "--resume") == 1
    assert "--anneal applies to --schedule onecycle only, not step" in capsys.readouterr().err
    from dualconv.runs import settings
    old = {k: v for k, v in settings({"model": "fast"}, None, epochs=1).items() if k != "anneal"}
    old["schedule_epochs"] = 1
    assert settings({}, old, epochs=1)["anneal"] == "cos"


class _Rate:
    """An optimizer as a schedule sees it: a rate to set."""

    lr = 0.1
