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
        curves = [(history[key], "o-", "train")]
        if history.get(f"val_{key}"):
            curves.append((history[f"val_{key}"], "s-", "test"))
        for values, style, label in curves:
            ax.plot(epochs, values, style, label=label)
            if len(epochs) == 1:  # a single point per curve: write its value beside it
                ax.annotate(f"{values[0]:.4f}", (1, values[0]), xytext=(8, 0), textcoords="offset points",
                            va="center")
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, len(epochs) + 0.5)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
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


def write_run_plots(model: Any, history: dict[str, list], out: str | os.PathLike,
                    input_shape: tuple[int, ...]) -> list[str]:
    """training_curves.png and filters.png of a run in ``out``; returns the names written."""
    from pathlib import Path

    written = []
    if history.get("loss"):
        plot_history(history, Path(out) / "training_curves.png")
        written.append("training_curves.png")
    filters = first_layer_filters(model, input_shape)
    if filters is not None:
        plot_filters(filters, Path(out) / "filters.png")
        written.append("filters.png")
    return written


def first_layer_filters(model: Any, input_shape: tuple[int, ...]) -> np.ndarray | None:
    """The first weight as images (O, C, kh, kw): a conv kernel, or a Dense layer on raw pixels."""
    from .backend import asnumpy

    for p in model.parameters():
        weight = asnumpy(p.data)
        if weight.ndim == 4:
            return weight
        if weight.ndim == 2 and weight.shape[0] == int(np.prod(input_shape)):
            return weight.T.reshape(-1, *input_shape)[:32]
        return None
    return None
