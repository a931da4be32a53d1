"""What a new user does at the command line: every mistake is one line, exit status 1,
no traceback; Ctrl-C exits 130 with where to continue; no run is written over another.

Runs on scikit-learn's digits (offline). The exit-status cases run the real command
in a subprocess; the rest call cli.main in-process.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dualconv import backend, checkpoint, cli
from dualconv.datasets import load_digits_dataset

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--dataset", "digits", "--model", "mlp", "--limit", "200", "--no-progress"]


def dualconv(*args, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "dualconv", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done: subprocess.CompletedProcess, command: str, pattern: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"dualconv {command}: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished one-epoch digits run (model.npz, checkpoint.npz, metrics.json)."""
    out = tmp_path_factory.mktemp("run") / "mlp"
    assert cli.main(["train", *QUICK, "--out", str(out)]) == 0
    return out


@pytest.fixture
def chdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- damaged files ---------------------------------------------------------------------

def test_truncated_checkpoint_with_resume(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes((run / "checkpoint.npz").read_bytes()[:300])
    done = dualconv("train", *QUICK, "--out", out, "--resume", cwd=tmp_path)
    assert_one_line_error(done, "train", r"checkpoint.npz is not a dualconv checkpoint .*damaged or truncated.*to start over")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_truncated_model_file(run, tmp_path, command):
    bad = tmp_path / "model.npz"
    bad.write_bytes((run / "model.npz").read_bytes()[:300])
    extra = ["--dataset", "digits"] if command == "evaluate" else [tmp_path / "digit.png"]
    done = dualconv(command, "--weights", bad, *extra, cwd=tmp_path)
    assert_one_line_error(done, command, rf"{re.escape(str(bad))} is not a dualconv model file")


# -- settings --------------------------------------------------------------------------

@pytest.fixture
def no_loading(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the data was loaded before the settings were checked")

    monkeypatch.setattr(cli, "load_dataset", load)


@pytest.mark.parametrize("args, pattern", [
    (["--momentum", "2"], r"--momentum must be in \[0, 1\), got 2"),
    (["--momentum", "-0.1"], r"--momentum must be in \[0, 1\)"),
    (["--lr-decay", "-1"], r"--lr-decay must be in \(0, 1\]"),
    (["--lr-decay", "1.5"], r"--lr-decay must be in \(0, 1\]"),
    (["--optimizer", "adam", "--momentum", "0.5"], r"--momentum applies to --optimizer sgd only"),
    (["--data-dir", "/no/such/dir"], r"--data-dir /no/such/dir does not exist"),
])
def test_bad_settings_are_refused_before_any_data_loads(args, pattern, chdir, no_loading, capsys):
    assert cli.main(["train", *QUICK, *args]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.match(rf"dualconv train: error: .*{pattern}", err), err
    assert not (chdir / "runs").exists()


@pytest.mark.parametrize("args, pattern", [
    (["--lr", "-1"], r"argument --lr: must be a positive number, got -1"),
    (["--epochs", "0"], r"argument --epochs: must be a positive integer, got 0"),
    (["--batch-size", "1.5"], r"argument --batch-size: must be a positive integer, got 1.5"),
])
def test_malformed_options_are_one_line_with_status_1(args, pattern, chdir, no_loading, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *QUICK, *args])
    err = capsys.readouterr().err
    assert info.value.code == 1 and len(err.splitlines()) == 1, err
    assert re.match(rf"dualconv train: error: {pattern} \(see dualconv train --help\)", err), err


def test_bad_settings_in_a_real_process(chdir):
    done = dualconv("train", *QUICK, "--momentum", "2", cwd=chdir)
    assert_one_line_error(done, "train", r"--momentum must be in \[0, 1\)")


def test_a_diverging_run_is_one_line_and_keeps_no_bad_weights(chdir):
    done = dualconv("train", *QUICK, "--lr", "1e9", "--out", chdir / "r", cwd=chdir)
    assert_one_line_error(done, "train", r"the (loss became (nan|inf)|update made the weights non-finite) "
                          r"at epoch 1, step \d+ .*weights were kept.*No checkpoint was written.*--lr 0.02$")
    assert not (chdir / "r" / "model.npz").exists()


def test_divergence_after_a_checkpoint_keeps_it_and_says_how_to_resume(run, tmp_path, capsys):
    out = tmp_path / "again"
    out.mkdir()
    for name in ("checkpoint.npz", "metrics.json"):
        (out / name).write_bytes((run / name).read_bytes())
    before = (out / "checkpoint.npz").read_bytes()
    assert cli.main(["train", *QUICK, "--out", str(out), "--resume", "--epochs", "2", "--lr", "1e9"]) == 1
    err = capsys.readouterr().err
    assert "at epoch 2, step" in err and "The checkpoint of epoch 1 is kept in" in err
    assert f"dualconv train --out {out} --resume --epochs 2 --lr 0.02" in err  # a tenth of the rate, at most the default
    assert (out / "checkpoint.npz").read_bytes() == before


def test_resume_with_a_new_learning_rate_uses_it_for_the_next_epoch(run, tmp_path, capsys):
    out = tmp_path / "slower"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes((run / "checkpoint.npz").read_bytes())
    assert cli.main(["train", *QUICK, "--out", str(out), "--resume", "--epochs", "2", "--lr", "0.005"]) == 0
    assert "(learning rate 0.005)" in capsys.readouterr().out
    assert checkpoint.load_checkpoint(out / "checkpoint.npz").state["optimizer"]["lr"] == 0.005


# -- Ctrl-C ------------------------------------------------------------------------------

def test_ctrl_c_after_a_checkpoint_rename_names_the_epoch_on_disk(chdir, monkeypatch, capsys):
    """An interrupt that lands in a save after its rename (here: in the directory fsync of
    epoch 2's save) leaves epoch 2's checkpoint on disk; the message names epoch 2, the
    one --resume continues from, not the count of saves that had returned (1). The
    interrupt of a real run (test_cli_guards.py) can land in this window."""
    calls = []

    def fsync_dir(directory):
        calls.append(directory)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_fsync_dir", fsync_dir)
    out = chdir / "run"
    assert cli.main(["train", *QUICK, "--epochs", "5", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dualconv train: interrupted during epoch 3; the checkpoint of epoch 2 is in {out}; "
                   f"continue with --resume (dualconv train --out {out} --resume --epochs 5)"]
    assert checkpoint.load_checkpoint(out / "checkpoint.npz").epoch == 2
    monkeypatch.undo()
    command = err[0].rsplit("(", 1)[1].rstrip(")").split()  # the command the message gives, as typed
    assert command[:2] == ["dualconv", "train"] and cli.main(command[1:]) == 0
    assert checkpoint.load_checkpoint(out / "checkpoint.npz").epoch == 5  # it continued the run to its end


# -- environment, flags, output --------------------------------------------------------------

def test_version():
    done = dualconv("--version", cwd=ROOT)
    from dualconv import __version__
    assert done.returncode == 0 and done.stdout.strip() == f"dualconv {__version__}"


def test_dualconv_backend_is_the_default_and_backend_wins(chdir, monkeypatch, capsys):
    monkeypatch.setattr(backend, "_global", None)
    monkeypatch.setattr(backend, "_import_cupy", lambda: None)  # a machine without CuPy
    monkeypatch.setenv("DUALCONV_BACKEND", "cupy")
    assert cli.main(["train", *QUICK]) == 1
    assert "backend 'cupy' requested: CuPy is not installed" in capsys.readouterr().err
    assert cli.main(["train", *QUICK, "--backend", "numpy"]) == 0
    monkeypatch.setenv("DUALCONV_BACKEND", "tpu")
    assert cli.main(["train", *QUICK]) == 1
    assert "DUALCONV_BACKEND=tpu is not a backend" in capsys.readouterr().err


def test_no_progress_bar_when_stderr_is_not_a_terminal(chdir):
    quick = [a for a in QUICK if a != "--no-progress"]
    done = dualconv("train", *quick, "--epochs", "2", cwd=chdir)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    epochs = [line for line in done.stdout.splitlines() if "epoch" in line and "img/s" in line]
    assert [line[:8] for line in epochs] == ["epoch 1/", "epoch 2/"]


def test_without_out_every_run_gets_a_new_directory(chdir, capsys):
    for n in (1, 2):
        assert cli.main(["train", *QUICK]) == 0
        assert f"writing this run to runs/digits-mlp-{n} " in capsys.readouterr().out
        assert (chdir / "runs" / f"digits-mlp-{n}" / "model.npz").is_file()


def test_out_holding_a_run_is_refused_unless_resume_or_overwrite(run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "model.npz").write_bytes(b"earlier work")
    (out / "notes.txt").write_text("mine")
    assert cli.main(["train", *QUICK, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already holds a run (model.npz)" in err and "--resume" in err and "--overwrite" in err
    assert (out / "model.npz").read_bytes() == b"earlier work"
    assert cli.main(["train", *QUICK, "--out", str(out), "--overwrite"]) == 0
    assert (out / "model.npz").read_bytes() != b"earlier work" and (out / "notes.txt").read_text() == "mine"


def test_offline_first_run_with_the_default_model(chdir, capsys):
    assert cli.main(["train", "--dataset", "digits", "--limit", "300", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "weidman on digits" in out and "runs/digits-weidman-1" in out


def test_predict_prints_the_readable_images_and_one_line_per_unreadable_one(run, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    _, (X_test, _) = load_digits_dataset()
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray((X_test[i, 0] * 255).round().astype(np.uint8), mode="L").save(paths[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert cli.main(["predict", "--weights", str(run / "model.npz"), str(paths[0]), str(broken), str(paths[1])]) == 1
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [str(paths[0]), str(paths[1])]
    assert captured.err.splitlines() == [f"dualconv predict: error: cannot read {broken} as an image: "
                                         + captured.err.split(" as an image: ", 1)[1].strip()]


def test_readme_lists_every_train_option():
    readme = (ROOT / "README.md").read_text()
    train = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    options = [s for action in train._actions for s in action.option_strings if s.startswith("--") and s != "--help"]
    assert "--lr-decay" in options and "--overwrite" in options
    missing = [o for o in options if f"`{o}" not in readme and f"{o}`" not in readme and f"{o}," not in readme]
    assert not missing, missing


@pytest.mark.parametrize("variable, value, message", [
    ("DUALCONV_NUM_THREADS", "two", "DUALCONV_NUM_THREADS must be a positive integer, got 'two'"),
    ("DUALCONV_WORKERS", "fibers", "DUALCONV_WORKERS must be 'processes' or 'threads', got 'fibers'"),
])
def test_a_bad_thread_setting_is_one_line_before_any_work(chdir, monkeypatch, capsys, variable, value, message):
    monkeypatch.setenv(variable, value)
    assert cli.main(["train", *QUICK, "--out", "run"]) == 1
    assert capsys.readouterr().err == f"dualconv train: error: {message}\n"
    assert not (chdir / "run").exists()
