"""Random sliding-window geometries, shared by the kernel tests.

One generator, ``draw_config``, driven two ways: by hypothesis (the
``configs`` strategy in tests/test_kernels_cpu.py) and by a seeded NumPy
generator (``random_configs``, for the CUDA kernel cases in tests/cuda/ and
tests/gpu/). Its ranges cover rectangular inputs and kernels, stride,
padding up to the whole kernel and beyond (windows wholly in the padding),
dilation, and overlapping windows (stride < kernel).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from dualconv.shapes import Window


class WindowConfig:
    """An input (N, C, H, W) and the Window (kh, kw, sy, sx, ph, pw, dy, dx) sliding
    over it; ``cfg.kh``, ``cfg.sy``, ... read the window's fields."""

    def __init__(self, N: int, C: int, H: int, W: int, *window: int) -> None:
        self.N, self.C, self.H, self.W = N, C, H, W
        self.window = Window(*window)

    def __getattr__(self, name: str) -> int:
        if name not in Window._fields:
            raise AttributeError(name)
        return getattr(self.window, name)

    @property
    def out(self) -> tuple[int, int]:
        """(out_h, out_w)."""
        return self.window.out_size(self.H, self.W)

    def __str__(self) -> str:
        return "x{}x{}x{}x{}_k{}x{}_s{}x{}_p{}x{}_d{}x{}".format(
            self.N, self.C, self.H, self.W, *self.window)

    def __repr__(self) -> str:
        return f"WindowConfig({self.N}, {self.C}, {self.H}, {self.W}, {', '.join(map(str, self.window))})"


def draw_config(draw_int: Callable[[int, int], int], overlapping: bool = False) -> WindowConfig:
    """A config whose output is at least 1x1. ``draw_int(lo, hi)`` returns an
    integer in [lo, hi], bounds included. ``overlapping``: stride < kernel on
    both axes, so neighbouring windows share pixels."""
    k_min = 2 if overlapping else 1
    kh, kw = draw_int(k_min, 4), draw_int(k_min, 4)
    sy = draw_int(1, min(3, kh - 1) if overlapping else 3)
    sx = draw_int(1, min(3, kw - 1) if overlapping else 3)
    dy, dx = draw_int(1, 3), draw_int(1, 3)
    ph, pw = draw_int(0, 4), draw_int(0, 4)
    # The smallest input with an output of 1: padded size = dilated kernel extent.
    min_h = max(1, dy * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dx * (kw - 1) + 1 - 2 * pw)
    H, W = draw_int(min_h, min_h + 10), draw_int(min_w, min_w + 10)
    N, C = draw_int(1, 3), draw_int(1, 3)
    cfg = WindowConfig(N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx)
    assert min(cfg.out) >= 1, cfg
    return cfg


def random_configs(seed: int, count: int, overlapping: bool = False) -> list[WindowConfig]:
    """``count`` configs of ``draw_config``, reproducible from seed."""
    rng = np.random.default_rng(seed)
    return [draw_config(lambda lo, hi: int(rng.integers(lo, hi + 1)), overlapping)
            for _ in range(count)]
