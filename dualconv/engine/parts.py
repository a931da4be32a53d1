"""Where a batch splits: the parts' sample ranges, a function of the batch and the model alone.

A part holds enough samples to pay the layers' fixed cost per call, and few enough that
its activations stay near the cache; the count of parts is even, so that each of two
cores gets as many. The ranges never depend on the number of cores, so neither do the
results: the same parts are summed in the same order on one core or two.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

PART_MIN_NUMBERS = 2**18
"""Fewest activation numbers a part makes in its forward (samples times numbers_per_sample):
smaller parts pay more fixed cost per sample (benchmarks/lenet_vs_torch.py chooses it).
One value for worker processes and threads alike, so both give the same parts, and so
the same bits."""

PART_MAX_NUMBERS = 2**23
"""Most activation numbers a part makes in training: a larger part's activations leave
the cache (benchmarks/lenet_vs_torch.py, the weidman train rows, chooses it)."""

EVAL_MAX_NUMBERS = 2**22
"""Most activation numbers a part makes in eval mode, where nothing is kept for a backward
and each layer's output is read once, by the next: smaller parts keep it in the cache
(benchmarks/lenet_vs_torch.py, the predict rows, chooses it)."""

PART_MAX_SAMPLES = 128
"""Most samples a part holds: two cores on large parts share the last-level cache and the
memory bus (benchmarks/lenet_vs_torch.py, the batch-256 rows, chooses it)."""


def numbers_per_sample(layers: Sequence[Any], sample_shape: tuple[int, ...]) -> int:
    """How many numbers the layers output for one sample of ``sample_shape``, all together
    (each layer's ``output_shape``, in order)."""
    shape, total = (1, *sample_shape), 0
    for layer in layers:
        shape = tuple(layer.output_shape(shape))
        total += math.prod(shape[1:])
    return total


def part_ranges(n: int, per_sample: int, min_numbers: int,
                max_numbers: int = PART_MAX_NUMBERS) -> list[tuple[int, int]]:
    """[start, stop) of each part of a batch of n samples that make ``per_sample``
    activation numbers each, in order.

    Parts hold between ceil(min_numbers / per_sample) samples (rounded up to even) and
    min(PART_MAX_SAMPLES, max_numbers / per_sample). A batch too small for two parts
    is one part; otherwise it splits into max(2, ceil(n / most)) parts, that count rounded
    up to even, of equal, even size (the last one shorter by what is left over), or as
    many as the fewest allow, rounded down to even. Every part starts at an even sample,
    as Dropout's masks require.
    """
    fewest = -(-min_numbers // max(1, per_sample))
    fewest += fewest % 2
    most = max(fewest, min(PART_MAX_SAMPLES, max_numbers // max(1, per_sample)))
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


def in_groups(items: list[Any], groups: int) -> list[list[Any]]:
    """items split into ``groups`` consecutive runs, their lengths differing by at most one."""
    size, extra = divmod(len(items), groups)
    bounds = [g * size + min(g, extra) for g in range(groups + 1)]
    return [items[bounds[g]:bounds[g + 1]] for g in range(groups)]
