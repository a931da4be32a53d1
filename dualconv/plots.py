"""Training-curve and first-layer-filter PNGs, through matplotlib when it is installed.

Uses matplotlib's object-oriented API with the Agg canvas (no pyplot), so it
changes no global matplotlib state and needs no display.
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import numpy as np


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_history(history: dict[str, list], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch (train and test) side by side, saved as a PNG."""
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig = _figure(10, 4)
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy")):
        ax.plot(epochs, history[key], "o-", label="train")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def plot_filters(weight: np.ndarray, path: str | os.PathLike) -> None:
    """The first layer's filters, weight: (out_channels, in_channels, kh, kw), as a grid of images.

    Each filter is shown channel-averaged, scaled to its own range; blue is
    negative, red positive.
    """
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"plot_filters: expected a conv weight (O, C, kh, kw), got shape {weight.shape}")
    filters = weight.mean(axis=1)
    count = len(filters)
    cols = min(count, 8)
    rows = math.ceil(count / cols)
    fig = _figure(1.2 * cols, 1.2 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for i, (ax, f) in enumerate(zip(axes, filters)):
        limit = float(np.abs(f).max()) or 1.0
        ax.imshow(f, cmap="bwr", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(str(i), fontsize=8)
    fig.suptitle(f"first-layer filters {tuple(weight.shape)}")
    fig.savefig(path)
