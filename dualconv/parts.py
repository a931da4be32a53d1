"""A training batch computed in parts, on both cores (CPU).

Why: on the CPU a LeNet batch of 256 images moves each activation through memory
at several MB a layer, more than the L2 cache holds; a part of 128 is nearer it.
How many samples make a part depends on how much a sample makes (part_ranges).
And parts run on both cores at once: the first on the calling thread, the others
on dualconv's workers (threads.py; on Linux worker processes, processes.py).
Measured on the 2-core Intel machine, one LeNet SGD step at batch 256: 22 ms whole
on one core, about 15 ms in two parts on one thread, 11.8 ms with a worker thread,
10-11 ms with a worker process; at batch 64, 4.3 ms whole, 3.7 ms in parts of 32
with a worker process.

What it computes. Every loss of this library is a mean over the batch, so the
batch's gradient is the weighted sum of its parts' gradients,

    grad = sum_p (n_p / N) * grad_p,     loss = sum_p (n_p / N) * loss_p,

for parts of n_p samples out of N, each grad_p computed by the plain layer code
on its part alone. The parts' terms are added in part order on the calling
thread, and the parts depend on N, the model and the kind of worker alone
(part_ranges), so the result does not depend on the number of threads. It differs
from the whole batch's only in rounding: the batch sums are split into partial sums
(and the weights n_p / N rounded; for N a power-of-two multiple of the part size
they are exact).

Dropout draws one key per batch and counts samples from each part's first, so a
part drops exactly what the whole batch would (layers/dropout.py). A model with a
layer that couples samples (BatchNorm in training: batch statistics) computes
every batch whole, and so does one on the GPU, where a whole batch is fastest.
"""
from __future__ import annotations

import copy
import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .inference_bands import banded_numbers_per_sample
from .threads import num_threads, run_in_parallel, worker_kind

if TYPE_CHECKING:
    from .losses import Loss
    from .model import Sequential

PART_MIN_NUMBERS = {"processes": 2**18, "threads": 2**20}
"""Fewest activation numbers a part makes in its forward pass (its samples times
numbers_per_sample), by the kind of dualconv's workers (threads.worker_kind). A part
pays the layers' fixed cost per call (about 0.6 ms of Python and call overhead for a
LeNet step), and threads working on small parts hand the GIL to each other too often.
Measured on two threads: LeNet's step at batch 64 took 4.4 ms whole and 5.5 ms in parts
of 32 (0.5M numbers each); the one-layer CNN "weidman" (100k numbers a sample) 11.8 ms
whole and 10.6 ms in parts of 32 (3.2M numbers each). A worker process has no GIL to
share: LeNet's step at batch 64 took 3.7 ms in parts of 32 with one (Intel, 2 cores)."""

PART_MAX_NUMBERS = 2**23
"""Most activation numbers a part makes, so that a large batch keeps its activations
near the cache: weidman's step at batch 256 took 36 ms in two parts (12.8M numbers
each) and 32 ms in four; on one thread LeNet's took 18 ms whole (3.8M numbers) and
15 ms in two parts."""

PART_MAX_SAMPLES = 128
"""Most samples a part holds. Two cores each working on a part of a large batch share
the L3 cache and the memory bus. While the convolutions kept their column matrices
(LeNet's: 9 MB a part of 64) a LeNet part of 128 took 8.6 ms alone and 10.5 ms beside
another, and batch 256 ran best in parts of 64 (2-core Intel, worker process:
19.5-22.4k images/s in parts of 128, 22.6-24.2k in 64, 20-20.8k in 32). Without them
(conv2d_weight_gradient_bands) parts of 128 are the faster: LeNet at batch 256, paired
medians of 6 fresh processes, +6% images/s over parts of 64 (Haswell kernels +5.5%;
on two threads, in 4 runs, +18%); at batch 192 two parts of 96 instead of three of 64
(the caller ran two, the worker one) +32%, at 512 four of 128 +5% (4 pairs each).
weidman (100k numbers a sample) is held to 83 by PART_MAX_NUMBERS: parts of 32 at batch
64 and of 64 at 256 (parts of 10 made 6.1-7.0k images/s against 8.4-9.5k)."""

Counter = Callable[[Any, Any], Any]  # (outputs, targets) -> how many are right, a device scalar


def numbers_per_sample(model: "Sequential") -> int:
    """How many numbers the layers of a built model output for one sample, all together.
    (Remembered per model for its layers and input shape: each training step asks.)"""
    key = (model.input_shape, tuple(model.layers))  # the layers themselves: compared by identity
    known = _numbers_per_sample.get(model)
    if known is None or known[0] != key:
        shapes = model.check_shapes((1, *model.input_shape[1:]))
        known = _numbers_per_sample[model] = key, sum(int(np.prod(shape[1:])) for shape in shapes[1:])
    return known[1]


_numbers_per_sample: "weakref.WeakKeyDictionary[Sequential, tuple[Any, int]]" = weakref.WeakKeyDictionary()


def part_ranges(n: int, per_sample: int, min_numbers: int) -> list[tuple[int, int]]:
    """[start, stop) of each part of a batch of n samples that make ``per_sample``
    activation numbers each, in order.

    Parts hold between ceil(min_numbers / per_sample) samples (rounded up to even) and
    min(PART_MAX_SAMPLES, PART_MAX_NUMBERS / per_sample). A batch too small for two parts
    is one part; otherwise it splits into max(2, ceil(n / most)) parts, that count
    rounded up to even, of equal, even size (the last one shorter by what is left over),
    or as many as the fewest allow, rounded down to even: two parts at least, and as
    many for each core of a 2-core machine (three parts ran two on one core: LeNet at
    batch 384 took 29% longer in three parts of 128 than in four of 96), each starting
    at an even sample, as Dropout's masks require. (Where the parts are a few samples,
    rounding their size up to even can leave an odd count.) The parts depend on these
    three numbers alone, never on the number of threads, so neither do the results.
    """
    fewest = -(-min_numbers // max(1, per_sample))
    fewest += fewest % 2
    most = max(fewest, min(PART_MAX_SAMPLES, PART_MAX_NUMBERS // max(1, per_sample)))
    count = max(2, -(-n // most))
    count += count % 2
    if n // count < fewest:
        count = n // fewest
        count -= count % 2
    if count < 2:
        return [(0, n)]
    size = -(-n // count)
    size += size % 2
    return [(start, min(n, start + size)) for start in range(0, n, size)]


PREDICT_BATCH_RULE = {"processes": (2**21, 32), "threads": (PART_MAX_NUMBERS, 16)}
"""(most activation numbers, fewest samples) of predict's CPU batch, by the kind of
dualconv's workers. Measured on the 2-core Intel machine, 1000 images: with a worker
process LeNet 78-88k images/s in batches of 64, 81-91k in 128, 57-59k in 256; weidman
layer by layer 41-43k in batches of 32, 36-38k in 16, 38-40k in 48, and in bands
(inference_bands.py: 25,098 numbers a sample) 53.5-54.7k in 32, 57.8k in 64, 47.6k in
128 (medians of 6). On two threads, fewer, longer calls win: weidman 33k images/s in
batches of 64, 25-28k in 83, 96 or 128; LeNet 45k in 64, 49k in 128."""


def predict_batch_size(model: "Sequential", most: int) -> int:
    """predict's batch on the CPU: the largest power of two up to ``most`` whose forward
    makes at most the PREDICT_BATCH_RULE's numbers, and no fewer samples than it says.
    With worker processes (predict's forward in bands: banded_numbers_per_sample) LeNet
    (14,762 numbers a sample) gets 128 and weidman (25,098) 64; with threads (layer by
    layer: numbers_per_sample), LeNet 128 and weidman (100,362) 64."""
    kind = worker_kind()
    budget, fewest = PREDICT_BATCH_RULE[kind]
    per_sample = banded_numbers_per_sample(model) if kind == "processes" else numbers_per_sample(model)
    fits = max(1, budget // max(1, per_sample))
    return min(most, max(fewest, 1 << (fits.bit_length() - 1)))


def in_groups(items: list[Any], groups: int) -> list[list[Any]]:
    """items split into ``groups`` consecutive runs, their lengths differing by at most one."""
    size, extra = divmod(len(items), groups)
    bounds = [g * size + min(g, extra) for g in range(groups + 1)]
    return [items[bounds[g]:bounds[g + 1]] for g in range(groups)]


def training_parts(model: "Sequential", n: int) -> list[tuple[int, int]]:
    """The parts a training batch of n samples runs in: part_ranges on the CPU, for a
    built model without sample-coupling layers, with the smallest part the kind of
    worker allows (PART_MIN_NUMBERS); else the whole batch, [(0, n)]."""
    if (model.backend != "numpy" or model.needs_build
            or any(layer.couples_samples for layer in model.layers)):
        return [(0, n)]
    return part_ranges(n, numbers_per_sample(model), PART_MIN_NUMBERS[worker_kind()])


def train_step_gradients(model: "Sequential", loss: "Loss", xb: Any, yb: Any,
                         ranges: list[tuple[int, int]], count_correct: Counter) -> tuple[Any, Any]:
    """Forward and backward of the batch (xb, yb) in the parts ``ranges`` (training_parts);
    fills every layer's grads with the batch's gradients. Returns (loss, correct count)
    as 0-d arrays."""
    threads = min(num_threads(), len(ranges))
    for layer in model.layers:
        layer.start_parts()
    try:
        crews = [(model, loss)] + [(model.replica(), copy.copy(loss)) for _ in range(threads - 1)]
        calls = []
        for crew, group in zip(crews, in_groups(ranges, threads)):
            first, last = group[0][0], group[-1][1]
            calls.append((run_parts, (crew, xb[first:last], yb[first:last], first, group, len(xb),
                                      count_correct)))
        results = [part for group in run_in_parallel(calls) for part in group]
    finally:
        for layer in model.layers:
            layer.end_parts()
    value, correct, grads = results[0]
    for part_value, part_correct, part_grads in results[1:]:
        value, correct = value + part_value, correct + part_correct
        for key, g in part_grads.items():
            grads[key] += g
    for (index, name), g in grads.items():
        model.layers[index].grads[name] = g
    return value, correct


def run_parts(crew: tuple["Sequential", "Loss"], xs: Any, ys: Any, offset: int,
              ranges: list[tuple[int, int]], batch_size: int,
              count_correct: Counter) -> list[tuple[Any, Any, dict[tuple[int, str], Any]]]:
    """Run the parts ``ranges`` of a batch of ``batch_size`` samples one after another
    on one model (the model or a replica); ``xs``, ``ys`` are the batch's samples
    [offset, offset + len(xs)), which the ranges fall in. Returns, per part, its
    weighted loss, its correct count and its weighted gradients {(layer index, name): array}."""
    model, loss = crew
    out = []
    for start, stop in ranges:
        for layer in model.layers:
            layer.enter_part(start)
        x, y = xs[start - offset:stop - offset], ys[start - offset:stop - offset]
        pred = model.forward(x)
        value = loss.forward(pred, y)
        model.backward(loss.backward(), input_grad=False)
        weight = model.dtype.type((stop - start) / batch_size)
        grads = {(i, name): g * weight for i, layer in enumerate(model.layers)
                 for name, g in layer.grads.items()}
        out.append((value * weight, count_correct(pred, y), grads))
    return out
