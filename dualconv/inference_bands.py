"""Inference through Conv2D -> pointwise layers -> Flatten -> Dense, a band of rows at a time (CPU).

Sequential.predict never back-propagates, so on the CPU it need not make the
activations between such layers whole. Seed 002's model (conv 32@5x5 "same", Tanh,
Flatten, Dropout, Dense) makes 100,352 bytes of activation an image, 3.2 MB for a
batch of 32: more than the L2 cache holds, so the convolution writes it to memory,
Tanh reads and writes it there, and Dense reads it once more.

Here each band of the convolution's output rows (its columns copied and multiplied as
in conv2d_forward_bands; a band is as many rows as keep that product within
BLOCK_MULTIPLY_ADDS, one at least) goes through the pointwise layers and into Dense's
product while it is in the cache: Dense's output is the sum, over the bands, of the
band's slice of the weight times the band. (Flatten orders a feature (channel, row,
column), so a band's features are, per channel, one run of rows; the weight's slices
are copied into the band's order once per predict call.)

The activations are the layers' own: the same functions on the same numbers, a band
at a time (the convolution's dot products as in conv2d_forward_bands, within their
rounding bound of the whole product's). Dense's dot products are summed a band at a
time, one more summation order, within the rounding bound gamma(K) * |x| @ |W| of
the exact result as any other. Measured on one core (Intel), seed 002's model at 32
images: 1.28-1.36 ms a batch layer by layer (convolution, Tanh, Dense: 0.65, 0.36,
0.28 ms), 1.12-1.14 ms in bands; its predict of 1000 images with a worker process,
43k -> 49k images/s (medians of 5 paired runs), and 57.8k in batches of 64, which the
bands make the best size (parts.PREDICT_BATCH_RULE, banded_numbers_per_sample).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .blocked_matmul import matmul_column_blocks
from .layers.base import Layer
from .layers.conv import Conv2D, band_columns, band_weights, rows_within_block
from .layers.dense import Dense
from .layers.reshape import Flatten


def fused_run_end(layers: list[Layer], start: int) -> int | None:
    """The index of the Dense that ends a run layers[start:end + 1] of Conv2D, pointwise
    layers, one Flatten, pointwise layers, Dense; None where no such run starts at start."""
    if type(layers[start]) is not Conv2D:
        return None
    flattened = False
    for index in range(start + 1, len(layers)):
        layer = layers[index]
        if type(layer) is Flatten and not flattened:
            flattened = True
        elif type(layer) is Dense:
            return index if flattened else None
        elif not layer.pointwise_in_eval:
            return None
    return None


def banded_numbers_per_sample(model: Any) -> int:
    """parts.numbers_per_sample for predict's banded forward: a run that fused_run_end
    finds counts its convolution's output once (made a band at a time) and its Dense's
    output, not the activations between them. (A built model; layers in their order.)"""
    shapes = model.check_shapes((1, *model.input_shape[1:]))[1:]  # each layer's output
    layers, total, index = model.layers, 0, 0
    while index < len(layers):
        end = fused_run_end(layers, index)
        if end is None:
            total += math.prod(shapes[index][1:])
            index += 1
        else:
            total += math.prod(shapes[index][1:]) + math.prod(shapes[end][1:])
            index = end + 1
    return total


class BandedInference:
    """Eval-mode forward of a model's layers (in run order) on the CPU, each run that
    fused_run_end finds computed in bands. Keeps each Dense's weight slices for the
    bands, so one object serves the batches of one predict call (weights unchanged)."""

    def __init__(self) -> None:
        self._slices: dict[tuple[int, int, int], list[np.ndarray]] = {}

    def forward(self, layers: list[Layer], x: Any) -> Any:
        """layers: a built model's layers in run order, in eval mode; x: its checked
        input, on its backend and in its dtype -> the last layer's output."""
        index = 0
        while index < len(layers):
            end = fused_run_end(layers, index)
            rows = self._band_rows(layers[index], x) if end is not None else None
            if rows:
                x = self._run(layers[index:end + 1], x, rows)
                index = end + 1
            else:
                x = layers[index].forward(x)
                index += 1
        return x

    @staticmethod
    def _band_rows(conv: Conv2D, x: Any) -> int | None:
        """Output rows a band: as many as keep the convolution's product for the band
        within BLOCK_MULTIPLY_ADDS, and one at least (the whole convolution would write
        its output to memory); None (no bands) off the CPU, in training mode, or for
        an empty batch."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or conv.training or x.shape[0] == 0:
            return None
        return max(1, rows_within_block(conv.params["weight"], "bias" in conv.params, x.shape, conv.window))

    def _run(self, run: list[Layer], x: np.ndarray, rows: int) -> np.ndarray:
        """x (N, C, H, W) through run = [Conv2D, ..., Dense] -> Dense's output (N, out_features)."""
        conv, dense = run[0], run[-1]
        pointwise = [layer for layer in run[1:-1] if type(layer) is not Flatten]
        conv._check_input(x)  # as its forward would
        conv._check_backend(x)
        w = conv.params["weight"]
        N, _, H, W = x.shape
        O = w.shape[0]
        out_h, out_w = conv.window.out_size(H, W)
        weights = band_weights(w, conv.params.get("bias"))
        bands = band_columns(x, weights.shape[1], conv.window, rows)
        band = np.empty(O * min(rows, out_h) * out_w * N, dtype=np.result_type(x, w))
        total = None  # (out_features, N): Dense's output, transposed
        for (first, last, columns), weight_slice in zip(bands, self._weight_slices(dense, O, out_h, out_w, rows)):
            z = band[:O * columns.shape[1]].reshape(O, -1)  # the band's outputs, contiguous
            matmul_column_blocks(weights, columns, out=z)
            for layer in pointwise:
                z = layer._forward(z)
            part = weight_slice @ z.reshape(-1, N)
            total = part if total is None else np.add(total, part, out=total)
        y = np.ascontiguousarray(total.T)
        if dense.use_bias:
            y += dense.params["bias"]
        return y

    def _weight_slices(self, dense: Dense, channels: int, out_h: int, out_w: int, rows: int) -> list[np.ndarray]:
        """Dense's weight (channels*out_h*out_w, out) as one (out, channels*rows*out_w)
        matrix a band of ``rows`` rows, its columns in the band's order (channel, row, column)."""
        key = (id(dense), out_h, rows)
        if key not in self._slices:
            weight = dense.params["weight"].reshape(channels, out_h, out_w, -1)
            self._slices[key] = [
                np.ascontiguousarray(weight[:, first:first + rows].transpose(3, 0, 1, 2)).reshape(weight.shape[-1], -1)
                for first in range(0, out_h, rows)]
        return self._slices[key]
