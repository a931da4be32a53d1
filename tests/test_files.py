"""Model files, checkpoints and run outputs: unreadable files give one ValueError naming the file;
written files get the user's normal mode; ScaledImages and the test split read only what they need."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv import checkpoint, plots
from dualconv.datasets import ScaledImages, load_digits_dataset, load_test_split
from dualconv.datasets import files as files_mod

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452")  # a PNG signature and the start of its header


def small_model() -> dc.Sequential:
    return dc.Sequential([dc.Dense(3, 2)], seed=0)


def small_trainer() -> dc.Trainer:
    model = small_model()
    return dc.Trainer(model, dc.MeanSquaredError(), dc.SGD(model.parameters(), lr=0.1, momentum=0.5))


def damaged_files(tmp_path):
    """name -> path of files that are not dualconv models or checkpoints."""
    good = tmp_path / "good.npz"
    small_model().save(good)
    data = good.read_bytes()
    paths = {}
    for name, content in [("empty.npz", b""), ("image.png", PNG + b"\0" * 64), ("truncated.npz", data[:200]),
                          ("text.npz", b"hello\n")]:
        paths[name] = tmp_path / name
        paths[name].write_bytes(content)
    paths["arrays.npz"] = tmp_path / "arrays.npz"
    np.savez(paths["arrays.npz"], a=np.zeros(3))
    return paths


def test_loading_an_unreadable_model_file_is_a_value_error_naming_it(tmp_path) -> None:
    for name, path in damaged_files(tmp_path).items():
        with pytest.raises(ValueError, match=rf"{path} is not a dualconv model file") as info:
            dc.Sequential.load(path)
        assert "allow_pickle" not in str(info.value), name


def test_loading_an_unreadable_checkpoint_is_a_value_error_naming_it(tmp_path) -> None:
    files = damaged_files(tmp_path)
    files["model.npz"] = tmp_path / "good.npz"
    for name, path in files.items():
        with pytest.raises(ValueError, match=rf"{path} is not a dualconv checkpoint"):
            checkpoint.load_checkpoint(path)
    with pytest.raises(ValueError, match=r"it is a model file"):
        checkpoint.load_checkpoint(files["model.npz"])


def test_a_checkpoint_is_not_taken_for_a_model(tmp_path) -> None:
    t = small_trainer()
    checkpoint.save_checkpoint(tmp_path / "c.npz", t.state_dict(), 1, {})
    with pytest.raises(ValueError, match=r"c.npz is not a dualconv model file .*it is a training checkpoint"):
        dc.Sequential.load(tmp_path / "c.npz")


def test_a_missing_file_stays_a_file_not_found_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        dc.Sequential.load(tmp_path / "nothing.npz")


def test_checkpoint_round_trip_through_trainer_state(tmp_path) -> None:
    a = small_trainer()
    a.fit(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), epochs=1, batch_size=2)
    checkpoint.save_checkpoint(tmp_path / "c.npz", a.state_dict(), 1, {"loss": [0.5]}, meta={"k": 1})
    saved = checkpoint.load_checkpoint(tmp_path / "c.npz")
    b = small_trainer()
    b.load_state_dict(saved.state)
    assert (saved.epoch, saved.history, saved.meta) == (1, {"loss": [0.5]}, {"k": 1})
    assert b.optimizer.steps == a.optimizer.steps == 2
    for key, value in a.model.state_dict().items():
        assert_array_equal(b.model.state_dict()[key], value)
    assert_array_equal(b.optimizer.state["0.Dense.weight"]["velocity"], a.optimizer.state["0.Dense.weight"]["velocity"])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask) -> None:
    old = os.umask(umask)
    try:
        small_model().save(tmp_path / "model.npz")
        checkpoint.write_json_atomic(tmp_path / "metrics.json", {"a": 1})
        checkpoint.save_checkpoint(tmp_path / "checkpoint.npz", small_trainer().state_dict(), 0, {})
    finally:
        os.umask(old)
    for name in ("model.npz", "metrics.json", "checkpoint.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_file_write_never_replaces_what_is_not_a_regular_file(tmp_path) -> None:
    """Writing goes to a temporary file renamed over the target: over a device (/dev/full)
    or a pipe that rename would replace it, so such a target is refused and stays."""
    pipe = tmp_path / "a pipe"
    os.mkfifo(pipe)
    with pytest.raises(OSError, match="exists and is not a regular file"):
        with checkpoint.atomic_path(pipe) as tmp:
            tmp.write_bytes(b"x")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["a pipe"]  # no temporary file left


def test_scaled_images_give_the_whole_conversion_batch_by_batch() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (10, 1, 3, 3), dtype=np.uint8)
    images = ScaledImages(pixels, 255.0)
    whole = pixels.astype(np.float32) / np.float32(255.0)
    assert images.shape == (10, 1, 3, 3) and images.dtype == np.float32 and len(images) == 10
    assert images.nbytes == pixels.nbytes == whole.nbytes // 4
    idx = np.array([7, 2, 2, 9])
    assert_array_equal(images[idx], whole[idx])
    assert_array_equal(images[3:5], whole[3:5])
    assert_array_equal(np.asarray(images), whole)
    head = images.head(4)
    assert len(head) == 4 and np.shares_memory(head.pixels, pixels)
    assert images.astype(np.float64)[idx].dtype == np.float64
    with pytest.raises(TypeError, match=r"ScaledImages: expected integer pixels, got float32"):
        ScaledImages(whole, 1.0)


def test_a_trainer_trains_on_scaled_images_exactly_as_on_floats() -> None:
    (X, y), _ = load_digits_dataset()
    pixels = np.rint(X[:96] * 16).astype(np.uint8)
    histories, states = [], []
    for data in (X[:96], ScaledImages(pixels, 16.0)):
        model = dc.Sequential([dc.Flatten(), dc.Dense(None, 10)], seed=0)
        t = dc.Trainer(model, dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=0.1), progress=False)
        histories.append(t.fit(data, y[:96], epochs=2, batch_size=16, seed=0, validation_data=(data, y[:96])))
        states.append(model.state_dict())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert histories[0][key] == histories[1][key], key
    for key in states[0]:
        assert_array_equal(states[0][key], states[1][key])


def test_the_test_split_reads_only_the_test_files(monkeypatch, tmp_path) -> None:
    tried = []

    def offline(remote, mirrors, directory):
        tried.append(remote.name)
        raise OSError("download failed: offline (test)")

    monkeypatch.delenv("DUALCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(files_mod, "download", offline)
    with pytest.raises(files_mod.DatasetNotFoundError) as info:
        load_test_split("mnist")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "2 of the 2 files needed" in message and "train-images" not in message.split("Looked in")[0]
    assert tried == ["t10k-images-idx3-ubyte.gz"]
    # offline, it suggests only what works offline
    assert "--dataset digits" in message and "fashion-mnist|" not in message


def test_a_missing_data_dir_is_an_error(tmp_path) -> None:
    with pytest.raises(files_mod.DatasetNotFoundError, match=r"the data directory .*nope does not exist"):
        load_test_split("mnist", tmp_path / "nope")


def test_a_one_epoch_curve_is_centred_on_its_epoch(monkeypatch, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    figures = []
    make = plots._figure
    monkeypatch.setattr(plots, "_figure", lambda *a: figures.append(make(*a)) or figures[-1])
    plots.plot_history({"loss": [0.5], "accuracy": [0.9], "val_loss": [0.4], "val_accuracy": [0.95]},
                       tmp_path / "curves.png")
    for ax in figures[0].axes:
        assert ax.get_xlim() == (0.5, 1.5)
        assert [t for t in ax.get_xticks() if 0.5 <= t <= 1.5] == [1.0]
        assert len(ax.texts) == 2  # each lone point carries its value
