"""LeNet-BN: its layers, and the training defaults `dualconv train --model lenet-bn` takes."""
from __future__ import annotations

import numpy as np

import dualconv as dc
from dualconv import cli, runs
from dualconv.models import lenet_bn


def test_batchnorm_follows_each_conv_and_the_hidden_dense_layer():
    model = lenet_bn(seed=0)
    names = [layer.name for layer in model.layers]
    for i, name in enumerate(names):
        if name in ("Conv2D", "Dense") and i < len(names) - 1:
            assert names[i + 1].startswith("BatchNorm") and not model.layers[i].use_bias
    out = model.forward(np.zeros((3, 1, 28, 28), np.float32))
    assert out.shape == (3, 10)
    assert [type(layer) for layer in model.layers].count(dc.BatchNorm2D) == 2


def _config(*argv: str) -> dict:
    args = cli.build_parser().parse_args(["train", *argv])
    explicit = {k: getattr(args, k) for k in runs.CONFIG_DEFAULTS if getattr(args, k) is not None}
    return runs.settings(explicit, None)


def test_train_uses_lenet_bn_tuned_settings_unless_told_otherwise():
    assert (_config()["lr"], _config()["lr_decay"]) == (runs.DEFAULT_LR["sgd"], 1.0)  # plain LeNet unchanged
    tuned = _config("--model", "lenet-bn")
    assert (tuned["lr"], tuned["lr_decay"]) == (0.05, 0.7)
    explicit = _config("--model", "lenet-bn", "--lr", "0.01", "--lr-decay", "0.9")
    assert (explicit["lr"], explicit["lr_decay"]) == (0.01, 0.9)
    assert _config("--model", "lenet-bn", "--optimizer", "adam")["lr"] == 1e-3
