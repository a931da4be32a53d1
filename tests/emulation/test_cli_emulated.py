"""``DUALCONV_EMULATE_GPU=1 dualconv ...``: the command line on the emulated CuPy, end to end."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DATA = os.environ.get("DUALCONV_DATA")
HAVE_MNIST = bool(DATA) and all((Path(DATA) / "mnist" / n).is_file() for n in NAMES)
needs_gpp = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulated CuPy needs g++")


def dualconv(*args: str, emulate: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("DUALCONV_EMULATE_GPU", None)
    if emulate:
        env["DUALCONV_EMULATE_GPU"] = "1"
    proc = subprocess.run([sys.executable, "-m", "dualconv", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@needs_gpp
def test_info_reports_the_emulated_device_and_a_passing_compile_check():
    out = dualconv("info", emulate=True).stdout
    assert "emulated" in out
    assert "kernel compile check: ok" in out
    assert "--backend auto picks: cupy" in out


@needs_gpp
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason="real MNIST not found in $DUALCONV_DATA/mnist")
def test_train_on_the_emulated_gpu_then_evaluate_on_numpy_gives_the_same_accuracy(tmp_path):
    """512 MNIST training images, one epoch on the "GPU"; the full test set on both backends."""
    train = dualconv("train", "--backend", "cupy", "--limit", "512", "--epochs", "1", "--no-progress",
                     "--out", str(tmp_path), emulate=True)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["backend"] == "cupy" and "emulated" in metrics["device"], train.stdout
    evaluate = dualconv("evaluate", "--weights", str(tmp_path / "model.npz"), "--backend", "numpy",
                        emulate=False)
    correct = int(re.search(r"\((\d+)/10000\)", evaluate.stdout).group(1))
    assert correct / 10000 == metrics["test_accuracy"], (train.stdout, evaluate.stdout)
    # It learned: chance is 0.1, with a standard error of 0.003 over 10,000 images.
    assert metrics["test_accuracy"] > 0.15
