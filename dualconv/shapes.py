"""Shape arithmetic shared by every layer and both kernel backends: pair, the
output-size formula, and the Window every sliding-window kernel takes."""
from __future__ import annotations

from typing import NamedTuple


def pair(value: int | tuple[int, int], name: str = "value") -> tuple[int, int]:
    """An int or a pair of ints -> a pair of ints (height, width)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not all(isinstance(v, int) for v in value):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return value, value


def get_conv_outsize(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Output length of a sliding window: floor((size + 2p - d(k-1) - 1) / s) + 1.

    May be below 1: callers check and raise with their own name.
    """
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class Window(NamedTuple):
    """The geometry of a sliding window, carried from a layer to both kernel twins.

    kh, kw kernel size; sy, sx stride; ph, pw padding (each side); dy, dx
    dilation. Output (oy, ox) at kernel offset (ky, kx) reads input pixel
    (oy*sy - ph + ky*dy, ox*sx - pw + kx*dx).
    """
    kh: int
    kw: int
    sy: int
    sx: int
    ph: int
    pw: int
    dy: int = 1
    dx: int = 1

    def out_size(self, H: int, W: int) -> tuple[int, int]:
        """(out_h, out_w) for an H x W input; below 1 when the window does not fit."""
        return (get_conv_outsize(H, self.kh, self.sy, self.ph, self.dy),
                get_conv_outsize(W, self.kw, self.sx, self.pw, self.dx))

    @property
    def span(self) -> tuple[int, int]:
        """The dilated kernel's extent (dy*(kh-1) + 1, dx*(kw-1) + 1)."""
        return self.dy * (self.kh - 1) + 1, self.dx * (self.kw - 1) + 1
