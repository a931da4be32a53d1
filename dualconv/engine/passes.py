"""A batch's forward and backward in parts, the parts spread over the cores.

``forward(layers, x)`` splits the batch into parts (parts.py), runs each part through
twins of the layers (copies that share the parameters and keep their own caches and
gradients; part 0 runs on the layers themselves), and returns the outputs joined in
order. It remembers the pass (as layers keep their caches), and ``backward(layers, gy, input_grad)``
splits gy the same way, runs each part's backward on the twins that ran its forward,
and leaves in each layer's ``grads`` the sum of the parts' gradients, added in part
order. Since gy's rows already carry the batch mean's 1/N, that sum is the batch's
gradient; it differs from one whole-batch backward only in how the batch sums are split.

Parts are grouped into consecutive runs, one per core: the first on the calling
thread, the others on workers (cores.py). A worker process keeps its twins between the
forward and the backward; if it cannot run a call, or dies in between, the caller
recomputes that run's forward and backward itself (the same numbers: the twins are
copies of the layers as they were before the batch, Dropout's step included).
"""
from __future__ import annotations

import copy
import functools
import os
import time
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from ..kernels import native
from . import workers
from . import neighbours, pinning, resend, reuse
from .cores import blas_on_one_thread, cores_now, run_on_threads, this_thread, worker_kind
from .parts import EVAL_MAX_NUMBERS, PART_MAX_NUMBERS, PART_MIN_NUMBERS, in_groups, numbers_per_sample, part_ranges

Layers = Sequence[Any]  # a model's layers in the order they run (dualconv.layers.Layer)
Range = tuple[int, int]

_PENDING_MOST = 4  # passes remembered for a backward (one per model trained at once)
_pending: "OrderedDict[tuple[int, ...], _Pass]" = OrderedDict()
_sizes: "OrderedDict[tuple[Any, ...], int]" = OrderedDict()  # numbers_per_sample, remembered
_last_layers: tuple[int, ...] = ()
Token = tuple[int, int]  # (the worker's pid, its clock in ns at the call): names a kept pass
_kept: dict[Token, list[list[Any]]] = {}  # in a worker: the twins of the pass it keeps, by token


def _token(crossed: np.ndarray) -> Token:
    """A token from the int64 array it crosses between the processes as (its numbers travel
    in the shared regions, so the calls and answers that carry it pack alike every step)."""
    return int(crossed[0]), int(crossed[1])


class _Lost(Exception):
    """A worker no longer holds the twins a backward names (it was replaced, or another
    forward came in between): the caller recomputes them."""


class _Run:
    """Consecutive parts computed together on one core: their ranges, their twins, and
    where their state lives (``worker`` and ``token`` for a worker process)."""

    def __init__(self, ranges: list[Range], twins: list[list[Any]]) -> None:
        self.ranges, self.twins = ranges, twins
        self.worker: workers.Worker | None = None
        self.token: Token | None = None

    @property
    def span(self) -> Range:
        return self.ranges[0][0], self.ranges[-1][1]


class _Pass:
    def __init__(self, runs: list[_Run], x: Any) -> None:
        self.runs, self.x = runs, x


def split(layers: Layers, x: Any) -> list[Range]:
    """The parts a batch x runs in: part_ranges for a NumPy batch of layers that each
    compute sample by sample (``couples_samples`` False), parts the smaller in eval mode;
    else the whole batch."""
    n = len(x)
    if not isinstance(x, np.ndarray) or n < 2 or any(layer.couples_samples for layer in layers):
        return [(0, n)]
    key = (*map(id, layers), *x.shape[1:])
    per_sample = _sizes.get(key)
    if per_sample is None:
        per_sample = _sizes[key] = numbers_per_sample(layers, tuple(x.shape[1:]))
        if len(_sizes) > 16:
            _sizes.popitem(last=False)
    training = any(layer.training for layer in layers)
    return part_ranges(n, per_sample, PART_MIN_NUMBERS, PART_MAX_NUMBERS if training else EVAL_MAX_NUMBERS)


_copied_plainly = functools.lru_cache(maxsize=256)(reuse.made_the_default_way)
"""reuse.made_the_default_way, decided once per class (twin runs per layer and step)."""


def twin(layer: Any, first_sample: int) -> Any:
    """A copy of ``layer`` for the part of a batch that starts at ``first_sample``: the same
    parameters and buffers (the same arrays), its own cache and gradients."""
    if _copied_plainly(type(layer)):  # what copy.copy does then, without its steps
        copied = object.__new__(type(layer))
        vars(copied).update(vars(layer))
    else:
        copied = copy.copy(layer)
    copied.grads, copied._cache, copied.first_sample = {}, None, first_sample
    return copied


def forward(layers: Layers, x: Any) -> Any:
    """x through the layers, in parts on the cores where the batch splits; the output.
    Marked as computing for other dualconv processes (neighbours.py), which then leave
    this one its share of the cores. The BLAS runs on one thread meanwhile: its threads
    would change the bits of its sums with the thread count, and would ask for the cores
    the parts use."""
    with blas_on_one_thread(), neighbours.computing():
        return _forward(layers, x)


def backward(layers: Layers, gy: Any, input_grad: bool) -> Any:
    """gy back through the layers of the last forward of these layers; fills each layer's
    grads with the batch's gradients and returns gx (None without input_grad). The BLAS
    on one thread, as in forward."""
    with blas_on_one_thread(), neighbours.computing():
        return _backward(layers, gy, input_grad)


def _forward(layers: Layers, x: Any) -> Any:
    global _last_layers
    key = tuple(map(id, layers))
    _pending.pop(key, None)
    ranges = split(layers, x)
    if len(ranges) == 1:
        return _forward_parts([list(layers)], x, ranges, 0)[0]
    twins = [list(layers)] + [[twin(layer, start) for layer in layers] for start, _ in ranges[1:]]
    cores = 1 if getattr(this_thread, "in_task", False) else min(cores_now(), len(ranges))
    runs = [_Run([ranges[i] for i in group], [twins[i] for i in group])
            for group in in_groups(list(range(len(ranges))), cores)]
    y = _run_forward(runs, x, check_code=key != _last_layers, join=_joined)
    _last_layers = key
    _pending[key] = _Pass(runs, x)
    while len(_pending) > _PENDING_MOST:
        _pending.popitem(last=False)
    return y


def _joined(outs: list[list[Any]]) -> Any:
    """The runs' outputs, per run a list per part, joined in order into one array."""
    return np.concatenate([out for run_outs in outs for out in run_outs])


def _backward(layers: Layers, gy: Any, input_grad: bool) -> Any:
    done = _pending.pop(tuple(map(id, layers)), None)
    if done is None:  # the forward ran whole
        return _backward_parts([list(layers)], [gy], input_grad)[0][1]
    return _run_backward(done, gy, input_grad, join=functools.partial(_summed, layers, input_grad))


def _summed(layers: Layers, input_grad: bool, results: list[list[Any]]) -> Any:
    """Each layer's grads set to the sum of its parts' (results: per run, per part, the
    layers' grads and gx), added in part order; the parts' gx joined (None without input_grad)."""
    parts = [part for run_results in results for part in run_results]
    for index, layer in enumerate(layers):
        for name in parts[0][0][index]:
            total = parts[0][0][index][name]
            for grads, _ in parts[1:]:
                total = total + grads[index][name]
            layer.grads[name] = total
    return np.concatenate([gx for _, gx in parts]) if input_grad else None


def _forward_parts(twins: list[list[Any]], xs: Any, ranges: list[Range], offset: int) -> list[Any]:
    """Each part's samples (xs holds the batch's from ``offset`` on) through its twins; their
    outputs."""
    outs = []
    for part_layers, (start, stop) in zip(twins, ranges):
        y = xs[start - offset:stop - offset]
        for layer in part_layers:
            y = layer.forward(y)
        outs.append(y)
    return outs


def _forward_kept(twins: list[list[Any]], xs: Any, ranges: list[Range], offset: int) -> tuple[np.ndarray, list[Any]]:
    """In a worker: _forward_parts, the twins then kept for the backward under the token
    returned with the outputs, as an int64 array (its numbers cross in the results region,
    so the answer packs to the same bytes every step and the caller reuses what it
    unpacked: Worker.finish). One pass is kept at a time (its arrays are views of the
    call slot).

    workers.py hands this function the objects it unpickled for the last call when the
    call packs to the same bytes and reuse.remember took them: the same twins, their
    arrays now holding this call's values, set back to their unpickled state (reuse.py
    says when that equals a fresh unpickle, whichever model's layers the bytes came from)."""
    _kept.clear()
    reuse.set_back(twins)
    outs = _forward_parts(twins, xs, ranges, offset)
    token = (os.getpid(), time.monotonic_ns())  # unique, even to a new worker given an old pid
    _kept[token] = twins
    return np.array(token, dtype=np.int64), outs


_forward_kept.arguments_reusable = lambda args: reuse.remember(args[0])  # type: ignore[attr-defined]


def _backward_parts(twins: list[list[Any]], gys: list[Any],
                    input_grad: bool) -> list[tuple[list[dict[str, Any]], Any]]:
    """Each part's gy back through its twins; per part, each layer's grads and the gx."""
    out = []
    for part_layers, gy in zip(twins, gys):
        for layer in reversed(part_layers[1:]):
            gy = layer.backward(gy)
        gx = part_layers[0].backward(gy, input_grad=input_grad)
        out.append(([layer.grads for layer in part_layers], gx))
    return out


def _backward_kept(token: np.ndarray, gys: list[Any], input_grad: bool) -> list[tuple[list[dict[str, Any]], Any]]:
    """In a worker: _backward_parts on the twins kept under ``token``, given as an int64
    array (in the call slot: the call packs to the same bytes every step, resend.start_alike)."""
    key = _token(token)
    twins = _kept.pop(key, None)
    if twins is None:
        raise _Lost(key)
    return _backward_parts(twins, gys, input_grad)


_backward_kept.arguments_reusable = lambda args: True  # type: ignore[attr-defined]  # views it only reads


def _run_forward(runs: list[_Run], x: Any, check_code: bool, join: Callable[[list[list[Any]]], Any]) -> Any:
    """join(the runs' outputs), each run on its core. join runs before the workers' lock is
    released: a worker's outputs are views of its results region, which the next call
    through that worker (another thread's, once the lock is free) writes over."""
    calls = [functools.partial(_forward_parts, run.twins, x, run.ranges, 0) for run in runs]
    if len(runs) == 1:
        return join([calls[0]()])
    if worker_kind() != "processes" or not workers.lock.acquire(blocking=False):
        return join(run_on_threads(calls))
    try:
        native.library()  # decided before a worker is forked, which inherits it: one build, one warning
        pool = workers.ready_workers(len(runs) - 1, check_code, {type(layer) for layer in runs[0].twins[0]})
        remote = []
        contents = resend.contents(runs[0].twins[0])  # the layers, before part 0 runs on them
        for run, worker in zip(runs[1:], pool):
            first, last = run.span
            # the twins are pickled here (or the last packing refilled: resend.py), before
            # part 0 changes the layers it runs on
            if resend.start(worker, contents, (_forward_kept, (run.twins, x[first:last], run.ranges, first))):
                run.worker = worker
                remote.append(run)
        outs = _gather(runs, remote, calls, lambda run: calls[runs.index(run)]())
        for index, run in enumerate(runs):
            if run.worker is not None:  # it answered: (token, outputs)
                token, outs[index] = outs[index]
                run.token = _token(token)
        return join(outs)
    finally:
        workers.lock.release()


def _run_backward(done: _Pass, gy: Any, input_grad: bool, join: Callable[[list[list[Any]]], Any]) -> Any:
    """join(the runs' backward results), each run on the core that ran its forward (or here,
    recomputed, where that worker is gone); join runs under the workers' lock, as in
    _run_forward."""
    runs = done.runs
    gys = [[gy[start:stop] for start, stop in run.ranges] for run in runs]
    calls = [functools.partial(_backward_parts, run.twins, part_gys, input_grad)
             for run, part_gys in zip(runs, gys)]

    def recompute(run: _Run) -> Any:  # the run's forward again here, then its backward
        _forward_parts(run.twins, done.x, run.ranges, 0)
        return _backward_parts(run.twins, gys[runs.index(run)], input_grad)

    remote_runs = [run for run in runs if run.worker is not None]
    if not remote_runs:
        return join(run_on_threads(calls) if len(runs) > 1 else [calls[0]()])
    if not workers.lock.acquire(blocking=False):
        return join([calls[0]()] + [recompute(run) for run in runs[1:]])
    try:
        remote = []
        for run in remote_runs:
            usable = run.worker in workers.workers and run.worker.alive()
            call = (_backward_kept, (np.array(run.token, dtype=np.int64), gys[runs.index(run)], input_grad))
            if usable and resend.start_alike(run.worker, call, slot=1):
                remote.append(run)
        local = {id(run): (calls[runs.index(run)] if run.worker is None else functools.partial(recompute, run))
                 for run in runs}
        return join(_gather(runs, remote, calls, lambda run: local[id(run)]()))
    finally:
        workers.lock.release()


def _gather(runs: list[_Run], remote: list[_Run], calls: list[Any], here: Any) -> list[Any]:
    """runs[0] here, the runs not in ``remote`` here after it, then each remote run's answer
    (one that died, or lost its twins, recomputed here); their results in order. An
    exception is raised after every run has finished; Ctrl-C stops the busy workers."""
    outcomes: dict[int, tuple[bool, Any]] = {}
    try:
        with pinning.on_first_core(bool(remote) and all(run.worker.core is not None for run in remote)):
            this_thread.in_task = True
            try:
                for index, run in enumerate(runs):
                    if index == 0 or run not in remote:
                        outcomes[index] = _attempt(calls[0] if index == 0 else functools.partial(here, run))
                for run in remote:
                    index = runs.index(run)
                    answer = run.worker.finish()
                    if answer is workers.DIED or (not answer[0] and isinstance(answer[1], _Lost)):
                        run.worker = None
                        answer = _attempt(functools.partial(here, run))
                    outcomes[index] = answer
            finally:
                this_thread.in_task = False
    except BaseException:  # interrupted: a worker still busy would answer late
        for run in remote:
            if run.worker is not None and run.worker.busy:
                run.worker.stop()
        raise
    for ok, value in (outcomes[index] for index in range(len(runs))):
        if not ok:
            raise value
    return [outcomes[index][1] for index in range(len(runs))]


def _attempt(call: Any) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as error:
        return False, error
