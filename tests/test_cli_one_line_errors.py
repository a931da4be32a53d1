"""More command-line mistakes, each one line with exit status 1 (as in test_cli_errors.py):
--resume with --overwrite or into nothing, the command missing, a multi-line dataset
error; and the note when --limit exceeds the dataset."""
from __future__ import annotations

import pytest

from dualconv import cli
from test_cli_errors import QUICK, assert_one_line_error, dualconv


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
