"""More command-line mistakes, each one line with exit status 1 (as in test_cli_errors.py):
--resume with --overwrite or into nothing, the command missing, an unknown option after a
command, a multi-line dataset error; and the note when --limit exceeds the dataset."""
from __future__ import annotations

import pytest

from dualconv import cli
from dualconv.datasets import files as dataset_files
from dualconv.datasets import load_digits_dataset
from test_cli_errors import QUICK, assert_one_line_error, chdir, dualconv, run  # noqa: F401 (fixtures)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    done = dualconv("train", *QUICK, "--out", tmp_path / "run", "--resume", "--overwrite", cwd=tmp_path)
    assert_one_line_error(done, "train", r"--overwrite: not allowed with argument --resume")
    assert not (tmp_path / "run").exists()


def test_resume_into_a_directory_that_does_not_exist_is_an_error(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert cli.main(["train", *QUICK, "--out", str(missing), "--resume"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"dualconv train: error: nothing to resume in {missing}: it does not exist; "
                            f"drop --resume to start a new run\n")
    assert not missing.exists()


def test_a_dataset_that_cannot_be_loaded_offline_is_one_line(run, monkeypatch, tmp_path, capsys):
    def offline(remote, mirrors, directory):
        raise OSError("download failed: offline (test)")

    monkeypatch.delenv("DUALCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(dataset_files, "download", offline)
    assert cli.main(["evaluate", "--weights", str(run / "model.npz"), "--dataset", "fashion-mnist"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dualconv evaluate: error: Fashion-MNIST: 2 of the 2 files needed could not "
                          "be loaded: "), err
    assert "; Looked in: " in err and "offline (test)" in err and "--dataset digits" in err
    assert "Put the 2 files t10k-" in err and "train-" not in err  # evaluate needs the test files only


def test_no_command_is_a_one_line_error_with_status_1(tmp_path):
    done = dualconv(cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.splitlines() == ["dualconv: error: give a command: train, evaluate, predict, export or info "
                                        "(see dualconv --help)"]


def test_a_limit_above_the_dataset_size_says_so(chdir, capsys):
    train_images = len(load_digits_dataset()[0][0])
    assert cli.main(["train", "--dataset", "digits", "--model", "mlp", "--limit", "100000", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (f"note: --limit 100000 exceeds the {train_images} training images of digits; "
            f"training on all of them") in out
    assert f"({train_images} train, " in out


@pytest.mark.parametrize("argv, command", [(["train", "--bogus"], "train"), (["info", "--x"], "info"),
                                           (["export", "--weights", "m.npz", "--nope"], "export"),
                                           (["--bogus"], None)])
def test_an_unknown_option_is_the_commands_one_line_error(argv, command, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 1
    name = "dualconv" if command is None else f"dualconv {command}"
    unknown = argv[-1]
    assert capsys.readouterr().err == (f"{name}: error: unrecognized arguments: {unknown} "
                                       f"(see {name} --help)\n")
