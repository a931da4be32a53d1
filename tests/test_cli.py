"""The dualconv command: train / evaluate / predict, outputs, checkpoints and resume.

Everything runs on scikit-learn's 8x8 digits (offline, seconds). The resume test
kills a real training process with SIGKILL after its first checkpoint and checks
that --resume ends with weights bitwise equal to an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dualconv import checkpoint, cli
from dualconv.datasets import files as dataset_files
from dualconv.datasets import load_digits_dataset

ROOT = Path(__file__).resolve().parents[1]
# A small, quick configuration with dropout (weidman), so resuming must restore its masks too.
DIGITS = ["train", "--dataset", "digits", "--model", "weidman", "--limit", "600", "--lr", "0.05", "--no-progress"]


def run_cli(*args: str) -> int:
    return cli.main([str(a) for a in args])


def weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 3-epoch digits run, uninterrupted: the reference for resume and the model for evaluate/predict."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert run_cli(*DIGITS, "--epochs", "3", "--out", out) == 0
    return out


def test_train_writes_every_output(trained, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "history", "seconds", "images_per_second", "backend", "device",
                "versions", "confusion_matrix"):
        assert key in metrics
    assert metrics["backend"] == "numpy" and metrics["device"]
    assert set(metrics["versions"]) == {"python", "numpy", "cupy", "dualconv"}
    assert metrics["epochs"] == 3 and len(metrics["history"]["val_accuracy"]) == 3
    assert metrics["train_images"] == 600 and metrics["test_images"] == 360
    assert metrics["test_accuracy"] == metrics["history"]["val_accuracy"][-1]
    assert metrics["test_accuracy"] > 0.8
    assert np.array(metrics["confusion_matrix"]).sum() == 360
    assert checkpoint.load_checkpoint(trained / "checkpoint.npz").epoch == 3
    assert (trained / "training_curves.png").stat().st_size > 0
    assert (trained / "filters.png").stat().st_size > 0
    assert not list(trained.glob(".*.tmp"))  # no temporary files left behind


def test_train_prints_a_line_per_epoch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # without --out the run goes to runs/<dataset>-<model>-<n>
    assert run_cli(*DIGITS, "--model", "mlp", "--epochs", "2", "--optimizer", "adam") == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "test acc" in lines[0] and "img/s" in lines[0]


def test_resume_after_sigkill_gives_identical_weights(trained, tmp_path):
    out = tmp_path / "killed"
    # On one core: the run's worker process would take the second one, and this test
    # must see the first checkpoint and kill the run before its last epoch ends. Results
    # do not depend on the number of cores, so the resumed run still matches `trained`.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               DUALCONV_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualconv", *DIGITS, "--epochs", "3", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.npz").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.npz").exists(), "killed too late: the run had finished"
    done = checkpoint.load_checkpoint(out / "checkpoint.npz").epoch
    assert 1 <= done < 3

    assert run_cli(*DIGITS, "--epochs", "3", "--out", out, "--resume") == 0
    resumed, reference = weights(out / "model.npz"), weights(trained / "model.npz")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert np.array_equal(resumed[key], reference[key]), key
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == done and metrics["epochs"] == 3
    assert metrics["history"]["val_accuracy"] == json.loads((trained / "metrics.json").read_text())[
        "history"]["val_accuracy"]


def test_adam_resume_in_steps_gives_identical_weights(tmp_path):
    args = [*DIGITS, "--model", "mlp", "--optimizer", "adam", "--lr", "0.003"]
    assert run_cli(*args, "--epochs", "2", "--out", tmp_path / "whole") == 0
    assert run_cli(*args, "--epochs", "1", "--out", tmp_path / "steps") == 0
    assert run_cli(*args, "--epochs", "2", "--out", tmp_path / "steps", "--resume") == 0
    whole, steps = weights(tmp_path / "whole" / "model.npz"), weights(tmp_path / "steps" / "model.npz")
    for key in whole:
        assert np.array_equal(whole[key], steps[key]), key


def test_resume_refuses_changed_settings(trained, tmp_path, capsys):
    assert run_cli(*DIGITS, "--epochs", "4", "--out", trained, "--resume", "--batch-size", "32") == 1
    err = capsys.readouterr().err
    assert "--batch-size 32 (checkpoint: 64)" in err and "new --out" in err


def test_resume_in_an_existing_directory_without_checkpoint_starts_from_scratch(tmp_path, capsys):
    (tmp_path / "fresh").mkdir()  # e.g. made by a job script that always passes --resume
    assert run_cli(*DIGITS, "--model", "mlp", "--out", tmp_path / "fresh", "--resume") == 0
    assert "starting from scratch" in capsys.readouterr().out
    assert checkpoint.load_checkpoint(tmp_path / "fresh" / "checkpoint.npz").epoch == 1


def test_evaluate_prints_accuracy_and_confusion_matrix(trained, capsys):
    assert run_cli("evaluate", "--weights", trained / "model.npz") == 0  # dataset read from metrics.json
    out = capsys.readouterr().out
    accuracy = json.loads((trained / "metrics.json").read_text())["test_accuracy"]
    assert f"accuracy {accuracy:.4f}" in out and "confusion matrix" in out


def test_evaluate_rejects_a_dataset_of_another_shape(trained, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_test_split", lambda name, data_dir, **kw: (np.zeros((2, 1, 28, 28)), None))
    assert run_cli("evaluate", "--weights", trained / "model.npz", "--dataset", "mnist") == 1
    assert "(1, 8, 8)" in capsys.readouterr().err


def test_predict_classifies_pngs_and_rejects_other_sizes(trained, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    _, (X_test, y_test) = load_digits_dataset()
    paths = []
    for i in range(5):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((X_test[i, 0] * 255).round().astype(np.uint8), mode="L").save(path)
        paths.append(path)
    assert run_cli("predict", "--weights", trained / "model.npz", *paths) == 0
    lines = capsys.readouterr().out.splitlines()
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert len(predicted) == 5 and np.mean(np.array(predicted) == y_test[:5]) >= 0.6

    big = tmp_path / "big.png"
    Image.new("L", (28, 28)).save(big)
    assert run_cli("predict", "--weights", trained / "model.npz", big) == 1
    assert "the model expects 8x8 grayscale" in capsys.readouterr().err


def test_info_reports_the_cpu_threads_the_workers_and_the_blas(capsys, monkeypatch):
    monkeypatch.setenv("DUALCONV_NUM_THREADS", "1")
    monkeypatch.setenv("DUALCONV_WORKERS", "threads")
    assert run_cli("info") == 0
    out = capsys.readouterr().out
    assert "CPU threads: 1 (DUALCONV_NUM_THREADS" in out
    assert "workers: threads (DUALCONV_WORKERS)" in out
    assert re.search(r"BLAS: \w+ [\d.]+ \(.+, \d+ threads\)", out), out


def test_help_names_the_image_size(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("predict", "--help")
    assert info.value.code == 0
    assert "28x28" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "dualconv", "train", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--resume" in done.stdout and "--limit" in done.stdout


def test_missing_mnist_is_one_clear_error(tmp_path, monkeypatch, capsys):
    def offline(remote, mirrors, directory):
        raise OSError("download failed: offline (test)")

    monkeypatch.delenv("DUALCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(dataset_files, "download", offline)
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "--no-progress") == 1
    err = capsys.readouterr().err
    assert err.startswith("dualconv train: error: MNIST") and "Traceback" not in err
    assert "t10k-labels-idx1-ubyte.gz" in err and "--dataset" in err


def test_lenet_on_digits_is_a_clear_error(capsys):
    assert run_cli("train", "--dataset", "digits", "--model", "lenet", "--no-progress") == 1
    assert "Try --model weidman" in capsys.readouterr().err


def test_without_matplotlib_a_note_and_no_png(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert run_cli(*DIGITS, "--model", "mlp", "--out", tmp_path) == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "model.npz").exists()


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.json"
    checkpoint.write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with checkpoint.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
