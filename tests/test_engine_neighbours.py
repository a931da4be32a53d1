"""Runs at once share the cores (dualconv/engine/neighbours.py): a process computing
elsewhere on the machine halves what a call spreads over, and the results keep their bits.

Another process is stood in for by a file of the shared directory locked through a file
description of this process's own (flock locks belong to the open file description, so
this process's own check sees it as another's), in a directory of the test's own.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dualconv as dc
from dualconv.engine import cores, neighbours
from dualconv.models import lenet


@pytest.fixture
def shared_dir(tmp_path, monkeypatch):
    """neighbours.py on a directory of this test's, its state fresh before and after."""
    monkeypatch.setattr(neighbours, "directory", lambda: str(tmp_path))
    monkeypatch.setattr(neighbours, "SCAN_SECONDS", 0.0)
    neighbours._forget_after_fork()
    yield tmp_path
    neighbours._forget_after_fork()


def _other_process(directory, pid: int) -> int:
    """A file of 'process' pid, locked as a computing process locks its own."""
    fd = os.open(os.path.join(directory, str(pid)), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def test_alone_a_call_takes_what_it_wants(shared_dir) -> None:
    assert neighbours.share(2, 2) == 2
    assert neighbours.share(1, 2) == 1


def test_a_process_computing_elsewhere_gets_its_share_then_counts_for_the_hold(shared_dir, monkeypatch) -> None:
    fd = _other_process(shared_dir, os.getppid())
    assert neighbours.share(2, 2) == 1
    assert neighbours.share(4, 8) == 4  # 8 cores between two: 4 each
    assert neighbours.share(8, 8) == 4
    fcntl.flock(fd, fcntl.LOCK_UN)  # between two of its calls: still counted for HOLD_SECONDS
    assert neighbours.share(2, 2) == 1
    monkeypatch.setattr(neighbours, "HOLD_SECONDS", 0.0)
    neighbours._seen_until.clear()
    assert neighbours.share(2, 2) == 2
    os.close(fd)


def test_a_file_left_by_a_run_that_ended_is_removed_and_never_counted(shared_dir) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    left = shared_dir / ended.stdout.strip()
    left.write_text("")
    assert neighbours.share(2, 2) == 2
    assert not left.exists()


def test_computing_marks_this_process_for_the_others(shared_dir) -> None:
    mine = os.path.join(shared_dir, str(os.getpid()))
    with neighbours.computing():
        with neighbours.computing():  # nested calls (a model inside a layer) hold one lock
            probe = os.open(mine, os.O_RDONLY)
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the calls are done
    os.close(probe)


def test_a_directory_another_user_could_write_turns_the_sharing_off(shared_dir) -> None:
    os.chmod(shared_dir, 0o777)
    fd = _other_process(shared_dir, os.getppid())
    assert neighbours.share(2, 2) == 2
    os.close(fd)


def test_a_file_removed_by_another_process_is_made_again(shared_dir) -> None:
    with neighbours.computing():
        pass
    mine = shared_dir / str(os.getpid())
    mine.unlink()
    with neighbours.computing():
        assert mine.exists()


def test_never_waits_for_a_process_checking_its_file(shared_dir) -> None:
    with neighbours.computing():
        pass
    checker = os.open(os.path.join(shared_dir, str(os.getpid())), os.O_RDONLY)
    fcntl.flock(checker, fcntl.LOCK_EX)  # another process, stopped while it checks this file
    with neighbours.computing():  # goes unmarked, but goes
        pass
    os.close(checker)


def test_a_killed_process_stops_counting_though_its_forked_child_lives(shared_dir) -> None:
    """A process computing forks a child (as the engine forks its workers) and is killed:
    its file is free at once, since the child closed its copy of the parent's file at the
    fork (flock locks belong to the open file, which the child would otherwise keep)."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    parent = os.fork()
    if parent == 0:  # the process that computes
        with neighbours.computing():
            if os.fork() == 0:  # its child (past the fork hooks): lives until the test says so
                os.write(ready_w, b"c")
                os.read(done_r, 1)
                os._exit(0)
            os.write(ready_w, b"p")
            time.sleep(60)
        os._exit(0)
    try:
        started = b""
        while len(started) < 2:  # the process and its child
            started += os.read(ready_r, 2 - len(started))
        locked = os.open(os.path.join(shared_dir, str(parent)), os.O_RDONLY)
        with pytest.raises(BlockingIOError):  # computing
            fcntl.flock(locked, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.kill(parent, signal.SIGKILL)
        os.waitpid(parent, 0)
        fcntl.flock(locked, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free, with the child alive
        os.close(locked)
    finally:
        os.write(done_w, b"x")


def test_no_directory_turns_the_sharing_off(tmp_path, monkeypatch) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")
    monkeypatch.setattr(neighbours, "directory", lambda: str(blocked / "below a file"))
    neighbours._forget_after_fork()
    try:
        with neighbours.computing():
            assert neighbours.share(2, 2) == 2
    finally:
        neighbours._forget_after_fork()


def _train(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((256, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 256)
    model = lenet(seed=seed)
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.05, momentum=0.9),
                         progress=False)
    trainer.fit(X, y, epochs=1, batch_size=64, seed=seed)
    return [p.data.copy() for p in model.parameters()]


def test_a_share_of_one_core_gives_the_same_bits(shared_dir, monkeypatch) -> None:
    monkeypatch.setattr(cores, "_cores", lambda: 2)
    cores.set_num_threads(2)
    try:
        alone = _train()
        calls = []
        share = neighbours.share
        monkeypatch.setattr(neighbours, "share", lambda wanted, n: calls.append(share(wanted, n)) or calls[-1])
        fd = _other_process(shared_dir, os.getppid())
        shared = _train()
        os.close(fd)
    finally:
        cores.set_num_threads(None)
    assert calls and set(calls) == {1}
    for a, b in zip(alone, shared):
        assert np.array_equal(a, b)
