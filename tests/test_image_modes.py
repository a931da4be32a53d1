"""predict's image reader: a digit in an alpha channel is read, float pixels are refused."""
from __future__ import annotations

import numpy as np
import pytest

from dualconv.datasets.images import read_image

Image = pytest.importorskip("PIL.Image")


def _digit() -> np.ndarray:
    ink = np.zeros((28, 28), np.uint8)
    ink[6:22, 12:16] = 255  # a "1"
    return ink


def test_a_digit_drawn_in_the_alpha_channel_is_read(tmp_path) -> None:
    """Black strokes whose shape is in the alpha channel (a transparent background), as
    drawing programs save them: the alpha is the digit, light on dark."""
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = _digit()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "one.png")
    got = read_image(tmp_path / "one.png", (28, 28))
    np.testing.assert_array_equal(got[0], _digit() / np.float32(255))
    la = np.stack([np.full((28, 28), 255, np.uint8), _digit()], axis=-1)  # white ink, alpha shape
    Image.fromarray(la, "LA").save(tmp_path / "one_la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "one_la.png", (28, 28))[0], _digit() / np.float32(255))


def test_colour_with_alpha_is_seen_on_black(tmp_path) -> None:
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = _digit()[..., None]
    rgba[..., 3] = 128
    rgba[0, 0, :3] = 255  # not one flat colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    got = read_image(tmp_path / "half.png", (28, 28))[0]
    assert got[10, 13] == pytest.approx(128 / 255, abs=1 / 255) and got[0, 1] == 0


def test_float_pixels_are_refused_by_name(tmp_path) -> None:
    Image.fromarray(_digit().astype(np.float32) / 255, "F").save(tmp_path / "one.tiff")
    with pytest.raises(ValueError, match=r"one.tiff holds F pixels \(16-bit, 32-bit or float\)"):
        read_image(tmp_path / "one.tiff", (28, 28))
