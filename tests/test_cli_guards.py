"""Nothing a user does loses work: an --out that cannot be written is refused before any
data loads; a failed save is one line and keeps the last checkpoint; --overwrite keeps the
earlier run until the new one has a checkpoint; a second run into a busy --out is refused;
SIGTERM is handled like Ctrl-C; a closed output pipe ends quietly; an explicit --data-dir
is the only place searched; a decompression-bomb image is one unreadable file.

Runs on scikit-learn's digits (offline), as test_cli_errors.py does.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from dualconv import checkpoint, cli
from dualconv import trainer as trainer_module
from dualconv.datasets import files as dataset_files
from dualconv.datasets import load_digits_dataset
from test_cli_errors import QUICK, ROOT, assert_one_line_error, chdir, dualconv, no_loading, run  # noqa: F401


def start_training(out: Path, cwd: Path) -> subprocess.Popen:
    """A long run into ``out``, in a real process; its stdout is read line by line. Ctrl-C
    is delivered as in a terminal (a shell's background job would ignore SIGINT)."""
    return subprocess.Popen([sys.executable, "-m", "dualconv", "train", *QUICK, "--epochs", "100000", "--out",
                             str(out)], cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_line(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"the run ended before printing {prefix!r}: {proc.stderr.read()}")


# -- item 1 and 3: an --out that cannot be written ------------------------------------------

def unwritable_outs(tmp_path: Path) -> list[Path]:
    (tmp_path / "a-file").write_text("not a directory")
    outs = [tmp_path / "a-file" / "run", Path("/proc/dualconv-test/run")]
    return outs + ([Path("/sys/dualconv-test")] if Path("/sys/kernel").is_dir() else [])


def test_an_out_that_cannot_be_written_is_one_line_before_training(tmp_path):
    for out in unwritable_outs(tmp_path):
        done = dualconv("train", *QUICK, "--out", out, cwd=tmp_path)
        assert_one_line_error(done, "train", rf"--out {re.escape(str(out))} cannot be written: ")
        assert "epoch 1/" not in done.stdout  # nothing was trained


def test_an_out_that_cannot_be_written_is_found_before_any_data_loads(chdir, no_loading, capsys):
    for out in unwritable_outs(chdir):
        assert cli.main(["train", *QUICK, "--out", str(out)]) == 1
        assert "cannot be written" in capsys.readouterr().err


def test_a_failed_run_removes_the_out_it_created(chdir, capsys):
    out = chdir / "new" / "run"
    assert cli.main(["train", *QUICK, "--model", "lenet", "--out", str(out)]) == 1  # lenet cannot take 8x8
    assert "cannot take digits" in capsys.readouterr().err
    assert not (chdir / "new").exists()


# -- item 4: --seed ---------------------------------------------------------------------------

def test_a_negative_seed_is_refused(chdir):
    done = dualconv("train", *QUICK, "--seed", "-5", "--out", chdir / "r", cwd=chdir)
    assert_one_line_error(done, "train", r"^dualconv train: error: --seed must be an integer >= 0, got -5$")
    assert not (chdir / "r").exists()


# -- item 2: a full disk while saving ----------------------------------------------------------

def fill_disk_at(monkeypatch, save_number: int) -> None:
    """The save_number-th checkpoint write fails as on a full disk, after writing part of the file."""
    real, calls = checkpoint.write_npz, []

    def write_npz(path, arrays):
        calls.append(path)
        if len(calls) == save_number:
            with checkpoint.atomic_path(path) as tmp:
                tmp.write_bytes(b"PK\x03\x04 the first bytes")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, arrays)

    monkeypatch.setattr(checkpoint, "write_npz", write_npz)


def test_a_full_disk_at_a_save_is_one_line_and_keeps_the_last_checkpoint(chdir, monkeypatch, capsys):
    out = chdir / "run"
    fill_disk_at(monkeypatch, 2)
    assert cli.main(["train", *QUICK, "--epochs", "3", "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"dualconv train: error: cannot save {out / 'checkpoint.npz'}: {os.strerror(errno.ENOSPC)}; the checkpoint "
        f"of epoch 1 is kept in {out}; continue from it with dualconv train --out {out} --resume --epochs 3\n")
    assert checkpoint.load_checkpoint(out / "checkpoint.npz").epoch == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz"]  # no temporary file, no lock left


# -- item 8: --overwrite keeps the earlier run until the new one has a checkpoint ---------------------

@pytest.fixture
def earlier(run, tmp_path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "earlier"
    out.mkdir()
    files = {name: (run / name).read_bytes() for name in ("model.npz", "checkpoint.npz", "metrics.json")}
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "notes.txt").write_text("mine")
    return out, files


def assert_earlier_run_in_place(out: Path, files: dict[str, bytes]) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "notes.txt"])
    for name, data in files.items():
        assert (out / name).read_bytes() == data, name


def test_ctrl_c_before_the_first_checkpoint_of_overwrite_puts_the_earlier_run_back(earlier, monkeypatch, capsys):
    out, files = earlier
    seen = []

    def interrupted_fit(self, *args, **kwargs):
        seen.append(sorted(p.name for p in out.iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "fit", interrupted_fit)
    assert cli.main(["train", *QUICK, "--out", str(out), "--overwrite"]) == 130
    aside = f"replaced-run-{os.getpid()}"
    assert seen == [sorted([".dualconv.lock", "notes.txt", aside])]  # moved aside while training
    captured = capsys.readouterr()
    assert f"the earlier run is kept in {out / aside} until this run's first checkpoint is saved" in captured.out
    assert "no checkpoint yet" in captured.err
    assert_earlier_run_in_place(out, files)


def test_a_failed_first_save_of_overwrite_puts_the_earlier_run_back(earlier, monkeypatch, capsys):
    out, files = earlier
    fill_disk_at(monkeypatch, 1)
    assert cli.main(["train", *QUICK, "--out", str(out), "--overwrite"]) == 1
    assert "no checkpoint was saved" in capsys.readouterr().err
    assert_earlier_run_in_place(out, files)


def test_overwrite_removes_the_earlier_run_once_replaced(earlier, capsys):
    out, files = earlier
    assert cli.main(["train", *QUICK, "--epochs", "2", "--out", str(out), "--overwrite"]) == 0
    assert not list(out.glob("replaced-run-*")) and not (out / ".dualconv.lock").exists()
    assert (out / "model.npz").read_bytes() != files["model.npz"] and (out / "notes.txt").read_text() == "mine"
    assert checkpoint.load_checkpoint(out / "checkpoint.npz").epoch == 2


# -- item 9: one run at a time in a directory; item 26: SIGTERM --------------------------------------

def test_a_second_run_into_a_busy_out_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "busy"
    first = start_training(out, tmp_path)
    try:
        wait_for_line(first, "mlp on")  # it holds the lock by now
        second = dualconv("train", *QUICK, "--out", out, cwd=tmp_path)
        assert_one_line_error(second, "train", rf"--out {re.escape(str(out))} is in use by another dualconv "
                              rf"train \(pid {first.pid}\)")
        first.send_signal(signal.SIGTERM)  # not SIGINT, which a test runner's children may ignore
        first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 143
    assert not (out / ".dualconv.lock").exists()  # released at exit


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    fd = os.open(out / ".dualconv.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        done = dualconv("train", *QUICK, "--out", out, cwd=tmp_path)
    finally:
        os.close(fd)
    assert_one_line_error(done, "train", r"is in use by another dualconv train \(pid 4242\)")
    assert not (out / "model.npz").exists()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_an_interrupt_prints_where_to_continue_and_exits_128_plus_the_signal(tmp_path, signum, code):
    out = tmp_path / "long"
    proc = start_training(out, tmp_path)
    try:
        wait_for_line(proc, "epoch 2/")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    match = re.fullmatch(r"dualconv train: interrupted during epoch (\d+); the checkpoint of epoch (\d+) is in "
                         rf"{re.escape(str(out))}; continue with --resume \(dualconv train --out .* --resume --epochs (\d+)\)",
                         lines[0])
    assert match and int(match[2]) == int(match[1]) - 1 >= 1 and int(match[3]) == 100000, lines[0]
    assert checkpoint.load_checkpoint(out / "checkpoint.npz").epoch == int(match[2])


# -- item 6: a closed output pipe -----------------------------------------------------------------

def test_evaluate_into_a_closed_pipe_ends_quietly_with_141(run, tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line, as `| head -1` after its line
    try:
        done = subprocess.run([sys.executable, "-m", "dualconv", "evaluate", "--weights", str(run / "model.npz"),
                               "--dataset", "digits"], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


# -- item 5: a decompression bomb among predict's images ----------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height grayscale pixels (Pillow checks the size when opening)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 10000])  # over twice Pillow's limit (an error), over it (a warning)
def test_a_decompression_bomb_is_one_unreadable_file(run, tmp_path, capsys, side):
    Image = pytest.importorskip("PIL.Image")
    _, (X_test, _) = load_digits_dataset()
    paths = [tmp_path / "digit0.png", tmp_path / "bomb.png", tmp_path / "digit1.png"]
    for i in (0, 2):
        Image.fromarray((X_test[i, 0] * 255).round().astype(np.uint8), mode="L").save(paths[i])
    paths[1].write_bytes(png_header(side, side))
    assert cli.main(["predict", "--weights", str(run / "model.npz"), *map(str, paths)]) == 1
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [str(paths[0]), str(paths[2])]
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"dualconv predict: error: cannot read {paths[1]} as an image: "), err
    assert "exceeds limit" in err[0] or "decompression bomb" in err[0], err


# -- item 25: an explicit --data-dir is the only place searched ------------------------------------------

@pytest.fixture
def elsewhere(monkeypatch, tmp_path) -> list:
    """$DUALCONV_DATA and the cache point elsewhere; a download is recorded and fails."""
    tried = []

    def download(remote, mirrors, directory):
        tried.append(remote.name)
        raise OSError("download failed: offline (test)")

    monkeypatch.setenv("DUALCONV_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(dataset_files, "download", download)
    return tried


def test_a_data_dir_without_the_dataset_is_an_error_naming_the_file(elsewhere, chdir, capsys):
    data = chdir / "data"
    data.mkdir()
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(data), "--out", str(chdir / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dualconv train: error: --data-dir {data}: no MNIST file train-images-idx3-ubyte.gz "
                          f"there (nor in {data / 'mnist'})"), err
    assert len(err.splitlines()) == 1 and elsewhere == [] and not (chdir / "r").exists()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_corrupt_file_in_data_dir_is_an_error_naming_it(elsewhere, run, chdir, capsys, command):
    data = chdir / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(b"\x1f\x8b truncated")
    args = (["train", "--out", str(chdir / "r")] if command == "train" else
            ["evaluate", "--weights", str(run / "model.npz")])
    assert cli.main([*args, "--dataset", "fashion-mnist", "--data-dir", str(data.parent)]) == 1
    first = "train-images-idx3-ubyte.gz" if command == "train" else "t10k-images-idx3-ubyte.gz"
    err = capsys.readouterr().err
    assert err.startswith(f"dualconv {command}: error: {data / first}: checksum mismatch for the Fashion-MNIST "
                          f"file {first}"), err
    assert len(err.splitlines()) == 1 and elsewhere == []
