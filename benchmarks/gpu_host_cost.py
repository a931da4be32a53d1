"""dualconv's own Python around each GPU launch, profiled on the emulated CuPy (no GPU needed).

    python benchmarks/gpu_host_cost.py [--batch 64] [--steps 32] [--top 12] [--evict-mb 8]

On a GPU a LeNet step's device work is a few tens of microseconds, so what bounds it
is the host: the Python that picks, checks, plans and launches each kernel. This
script measures that Python without a GPU, under ``dualconv.testing.emulated_cupy()``,
with cProfile's self time of the functions in dualconv's own files (dualconv/testing,
the stand-in for CuPy itself, excluded; so are NumPy, the kernels' g++ code and
Python's builtins). Two figures:

* **per step**: LeNet with MNIST-shaped data resident on the device, a ``Trainer.fit``
  of ``steps`` batches after a warm-up fit, profiled step by step (from one
  ``train_step`` call to the next: the batch's gather, the guard and the running sums
  included). Broken down by file. The goal's figure runs the fit with the custom
  kernels made no-ops, as the issue's first audit measured it: on a GPU they run on
  the device, while here the stand-in's kernels run on this CPU between two lines of
  dualconv and evict its code and data from the caches, so the Python after each one
  runs slower. Three more runs show that: the fit with the stand-in's own arithmetic
  (ufuncs, products, reductions) made no-ops too, so that no device work runs on this
  CPU, as on a GPU host; the fit with the stand-in's kernels; and with no-op kernels
  that each only copy ``--evict-mb`` megabytes.
* **per custom launch**: the calls of the CUDA twins (kernels/cuda.py) that one fit
  step makes are recorded, then replayed through ``dualconv.kernels`` (dispatch,
  checks, plan, launch) ``replays`` times with every RawKernel call made a no-op:
  dualconv's self time over the launches counted.

Each file's figure is its median over the steps (or replays), the garbage collector
off: another process taking the CPU shows as a spike in a few segments (_Segments).
A step figure is that of the least of ``--repeats`` fits (3; the asv goal figure takes
3 fits of 32 steps): a slower spell of the whole machine, common on these shared VMs,
only adds time to a fit.
Self times under cProfile include some of the profiler's own cost per call (most for
code that calls many small functions, such as the stand-in's array attributes, which
are C attributes in CuPy), so they overstate what an unprofiled run pays; they are for
comparing code on one machine. Goals (issue 26): <= 1.0 ms per LeNet step at batch 64,
<= 10 us per custom launch. The asv suite tracks both (bench_gpu_host_cost.py).
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import statistics
import sys
from collections import defaultdict
from typing import Any, Iterator

try:
    import dualconv  # noqa: F401
except ImportError:  # run from a checkout without dualconv installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dualconv as dc
from dualconv.models import lenet
from dualconv.testing import emulated_cupy

try:
    from .gpu_counters import WARMUP_STEPS, _data, _optimizer
except ImportError:  # run as a script
    from gpu_counters import WARMUP_STEPS, _data, _optimizer  # type: ignore[no-redef]

PACKAGE = os.path.dirname(os.path.abspath(dc.__file__))
STAND_IN = os.path.join(PACKAGE, "testing")


def own_self_time(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds of self time so far per file of dualconv in ``profile`` (paths relative to
    the package's parent), dualconv/testing left out. Code a module generates
    (kernels/signatures.py's ``generated``: file name ``module.py<label>``) is its module's."""
    per_file: dict[str, float] = defaultdict(float)
    for entry in profile.getstats():
        filename = getattr(entry.code, "co_filename", None)  # builtins have no code object
        if filename is None:
            continue
        path = os.path.abspath(filename.split("<", 1)[0] if ".py<" in filename else filename)
        if path.startswith(PACKAGE + os.sep) and not path.startswith(STAND_IN + os.sep):
            per_file[os.path.relpath(path, os.path.dirname(PACKAGE))] += entry.inlinetime
    return dict(per_file)


class _Segments:
    """A profile cut into segments: ``cut()`` ends the open segment and starts the next;
    ``stop()`` ends the profile, dropping the open one. One profiler runs throughout
    (a fresh one per segment would charge the making of its entries to the callers), and
    a segment's figures are the differences of its snapshots at the cuts."""

    def __init__(self) -> None:
        self.files: list[dict[str, float]] = []
        self.profile = cProfile.Profile()
        self.last: dict[str, float] | None = None

    def cut(self) -> None:
        self.profile.disable()
        now = own_self_time(self.profile)
        if self.last is not None:
            self.files.append({f: t - self.last.get(f, 0.0) for f, t in now.items()})
        self.last = now
        self.profile.enable()

    def stop(self) -> None:
        self.profile.disable()

    def median(self) -> dict[str, float]:
        """Per file, the median over the segments. A profile's clock is the wall clock, so a
        segment that loses the CPU to another process charges the wait to whatever
        function was running: a spike in a few files of a few segments, which the
        median leaves out."""
        return {f: statistics.median(seg.get(f, 0.0) for seg in self.files)
                for f in set().union(*self.files)}


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _trainer(emu: Any, optimizer: str, batch: int, batches: int) -> tuple[Any, Any, Any]:
    """(trainer, X, y): LeNet on the emulated device, its data already there."""
    X, y = _data(batch * batches)
    model = lenet(seed=0)
    model.to("cupy")
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(), _optimizer(optimizer, model),
                         progress=False, log_every=10 * batches)
    return trainer, emu.cupy.asarray(X), emu.cupy.asarray(y)


def fit_step_cost(optimizer: str = "sgd-momentum", batch: int = 64, steps: int = 32,
                  no_op: bool = False, evict_mb: float = 0.0, off_host: bool = False,
                  repeats: int = 1) -> dict[str, Any]:
    """dualconv's self time per step inside ``Trainer.fit`` of ``steps`` batches, after a
    warm-up fit: {"seconds": per step, "files": {file: seconds per step}, "launches":
    kernel launches per step}. A segment runs from one ``train_step`` call to the next,
    so it holds all that fit does per step; the first and the last, with what a fit does
    once, are left out. With ``no_op`` the RawKernel calls of the profiled fit run nothing
    (the products and ufuncs still run on the CPU): the stand-in's kernels, run by the CPU
    between two lines of dualconv, no longer evict dualconv's code and data from the
    caches, as a GPU's kernels would not. ``evict_mb`` (with ``no_op``) makes each no-op
    kernel copy that many megabytes instead, evicting the caches as the stand-in's
    kernels do, without their work: what the eviction alone costs dualconv's Python.
    ``off_host`` (with ``no_op``): the stand-in's ufuncs, products and reductions are made
    no-ops too (``_device_work_off_host``), so no device work at all runs on this CPU.
    ``repeats``: that many profiled fits, each with its own trainer; the figures are those
    of the fit with the least total (another process taking the CPU through a whole fit
    only adds time, so the least is the nearest to the code's own)."""
    if repeats < 1:
        raise ValueError(f"fit_step_cost: repeats must be 1 or more, got {repeats}")
    costs = [_one_fit_cost(optimizer, batch, steps, no_op, evict_mb, off_host)
             for _ in range(repeats)]
    return min(costs, key=lambda cost: cost["seconds"])


def _one_fit_cost(optimizer: str, batch: int, steps: int, no_op: bool, evict_mb: float,
                  off_host: bool) -> dict[str, Any]:
    """fit_step_cost's figures for one profiled fit."""
    with emulated_cupy() as emu:
        trainer, X, y = _trainer(emu, optimizer, batch, steps)
        trainer.fit(X[:batch * WARMUP_STEPS], y[:batch * WARMUP_STEPS], batch_size=batch, seed=0)
        segments, step = _Segments(), trainer.train_step

        def cut_then_step(*args: Any, **kwargs: Any) -> Any:
            segments.cut()
            return step(*args, **kwargs)
        trainer.train_step = cut_then_step  # type: ignore[method-assign]
        emu.reset_counters()
        with (_no_op_kernels(evict_mb) if no_op else contextlib.nullcontext(),
              _device_work_off_host() if no_op and off_host else contextlib.nullcontext(), _collector_off()):
            try:
                trainer.fit(X, y, batch_size=batch, seed=0)
            finally:
                segments.stop()
                del trainer.train_step
        launches = emu.counters["kernel_launches"] / steps
    per_file = segments.median()
    return {"seconds": sum(per_file.values()), "files": per_file, "launches": launches}


@contextlib.contextmanager
def _recording(calls: list[tuple[str, tuple[Any, ...]]]) -> Iterator[None]:
    """Record every call of a kernel with a CUDA twin in kernels/cuda.py as (kernel,
    arguments): at the dispatch point (dualconv.kernels), and where another twin calls it
    directly (the convolution's im2col and col2im). What the dispatch remembers is
    forgotten before and after, and the convolution's runner (which binds its im2col's
    plan and would skip cuda.im2col) is off meanwhile, so every such call is seen and no
    recorder stays in it."""
    from dualconv import kernels
    from dualconv.kernels import cuda, cuda_conv

    names = [name for name in (*cuda.KERNELS, "max_pool_values") if hasattr(cuda, name)]
    originals = {name: getattr(cuda, name) for name in names}
    dispatch, inside = kernels._Dispatchers(), [0]  # a fresh memory of signatures

    class Recording(dict):
        """kernels._dispatch, each call of a kernel with a CUDA twin on CuPy arrays recorded."""

        def __missing__(self, kernel: str) -> Any:
            real = dispatch[kernel]

            def record_dispatch(*args: Any) -> Any:
                if kernel not in originals or type(args[0]).__module__.split(".")[0] == "numpy":
                    return real(*args)
                calls.append((kernel, args))
                inside[0] += 1
                try:
                    return real(*args)
                finally:
                    inside[0] -= 1
            made = self[kernel] = record_dispatch
            return made

    def recorder(name: str) -> Any:
        def record(*args: Any) -> Any:
            if not inside[0]:
                calls.append((name, args))
            return originals[name](*args)
        return record
    conv_runner = cuda_conv.runner
    try:
        cuda_conv.runner = lambda kernel, args: None  # type: ignore[assignment]
        kernels._dispatch = Recording()  # type: ignore[attr-defined]
        for name in names:
            setattr(cuda, name, recorder(name))
        yield
    finally:
        kernels._dispatch = kernels._Dispatchers()  # type: ignore[attr-defined]  (forgets the recorders)
        cuda_conv.runner = conv_runner  # type: ignore[assignment]
        for name, original in originals.items():
            setattr(cuda, name, original)


@contextlib.contextmanager
def _no_op_kernels(evict_mb: float = 0.0) -> Iterator[None]:
    """Every RawKernel call of the stand-in counts its launch and runs nothing, or only
    copies ``evict_mb`` megabytes (half read, half written) to evict the caches."""
    import numpy as np
    from dualconv.testing.fake_cupy import _counters, _raw

    original = _raw.RawKernel.__call__
    source = np.ones(int(evict_mb * 2**20) // 8, np.float32)
    target = np.empty_like(source)

    def no_op(self: Any, grid: Any, block: Any, args: Any, **options: Any) -> None:
        _counters.launch()
        if source.size:
            np.copyto(target, source)
    _raw.RawKernel.__call__ = no_op  # type: ignore[method-assign]
    try:
        yield
    finally:
        _raw.RawKernel.__call__ = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _device_work_off_host() -> Iterator[None]:
    """The stand-in's own arithmetic made no-ops as well: a ufunc (the products included),
    ufunc reduction or array reduction counts its launches and returns an uninitialized
    array of the shape and dtype it returned when it first ran on operands of the same
    shapes, strides and dtypes (and the same other arguments); one that writes into an
    existing array writes nothing. What the CPU runs between two lines of dualconv is
    then Python alone, dualconv's and the stand-in's, as on a GPU host. Array creation,
    copies, fills and gathers still run (the divergence guard's verdict must hold)."""
    import numpy as np
    from dualconv.testing.fake_cupy import _device, _reductions

    reductions = {getattr(np.ndarray, name) for name in _reductions.PARAMETERS}
    new, launch = _device.new, _device.launch
    shapes: dict[Any, tuple[tuple[int, ...], Any]] = {}

    def arithmetic(fn: Any) -> bool:
        return (isinstance(fn, np.ufunc) or isinstance(getattr(fn, "__self__", None), np.ufunc)
                or fn in reductions) and _device.recording() is None and not _device.managed()

    def launch_off_host(fn: Any, *args: Any, copied_bytes: int = 0, launches: int = 1, **kwargs: Any) -> None:
        if not arithmetic(fn):
            return launch(fn, *args, copied_bytes=copied_bytes, launches=launches, **kwargs)
        _device._count(launches, copied_bytes)

    def new_off_host(fn: Any, *args: Any, launches: int = 1, copied_bytes: int = 0, **kwargs: Any) -> Any:
        if not arithmetic(fn):
            return new(fn, *args, launches=launches, copied_bytes=copied_bytes, **kwargs)
        key = (fn, launches, copied_bytes, _operands(args), _operands(kwargs))
        known = shapes.get(key)
        if known is None:
            out = new(fn, *args, launches=launches, copied_bytes=copied_bytes, **kwargs)
            if out.flags.c_contiguous:
                shapes[key] = (out.shape, out.dtype)
            return out
        _device._count(launches, copied_bytes)
        return np.empty(*known)

    _device.new, _device.launch = new_off_host, launch_off_host  # type: ignore[assignment]
    try:
        yield
    finally:
        _device.new, _device.launch = new, launch  # type: ignore[assignment]


def _operands(value: Any) -> Any:
    """What decides an operation's result shape: an array's shape, dtype and strides, the
    items of a tuple, list or dict, any other value itself (or its repr, unhashable)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return ("array", value.shape, value.dtype.str, value.strides)
    if isinstance(value, (tuple, list)):
        return (type(value), *map(_operands, value))
    if isinstance(value, dict):
        return tuple(sorted((key, _operands(item)) for key, item in value.items()))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return (type(value), value)


def launch_cost(optimizer: str = "sgd-momentum", batch: int = 64,
                replays: int = 40) -> dict[str, Any]:
    """dualconv's self time per custom launch, the kernels made no-ops: {"seconds": per
    launch, "files": {file: seconds per launch}, "launches": custom launches per step,
    "kernels": {kernel: calls per step}}. One fit step's calls of the CUDA twins, replayed
    through dualconv.kernels ``replays`` times, one segment each."""
    from dualconv import kernels

    with emulated_cupy() as emu:
        trainer, X, y = _trainer(emu, optimizer, batch, WARMUP_STEPS + 1)
        trainer.fit(X[:batch * WARMUP_STEPS], y[:batch * WARMUP_STEPS], batch_size=batch, seed=0)
        calls: list[tuple[str, tuple[Any, ...]]] = []
        with _recording(calls):
            trainer.fit(X[:batch], y[:batch], batch_size=batch, seed=0)
        segments = _Segments()
        with _no_op_kernels(), _collector_off():
            for name, args in calls:  # fills whatever caches the launch path keeps
                getattr(kernels, name)(*args)
            emu.reset_counters()
            for _ in range(replays):
                segments.cut()
                for name, args in calls:
                    getattr(kernels, name)(*args)
            segments.cut()
            segments.stop()
            launched = emu.counters["kernel_launches"] / replays
    per_kernel: dict[str, int] = defaultdict(int)
    for name, _ in calls:
        per_kernel[name] += 1
    per_file = {f: seconds / launched for f, seconds in segments.median().items()}
    return {"seconds": sum(per_file.values()), "files": per_file, "launches": launched,
            "kernels": dict(per_kernel)}


def _print(title: str, cost: dict[str, Any], unit: str, scale: float, top: int) -> None:
    print(f"{title}: {cost['seconds'] * scale:,.1f} {unit} "
          f"({cost['launches']:.0f} launches per step)")
    for name, seconds in sorted(cost["files"].items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {seconds * scale:10,.1f} {unit}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32, help="steps of the profiled fit")
    parser.add_argument("--repeats", type=int, default=3,
                        help="profiled fits per figure; the one with the least total counts")
    parser.add_argument("--optimizer", default="sgd-momentum", choices=["sgd-momentum", "adam"])
    parser.add_argument("--top", type=int, default=12, help="files listed")
    parser.add_argument("--evict-mb", type=float, default=8.0,
                        help="megabytes each no-op kernel copies in the eviction run (0: no such run)")
    args = parser.parse_args(argv)
    quiet = fit_step_cost(args.optimizer, args.batch, args.steps, no_op=True, repeats=args.repeats)
    _print(f"dualconv's own Python per {args.optimizer} step inside Trainer.fit, batch {args.batch}, "
           f"the custom kernels made no-ops, as a GPU runs them off the host (goal <= 1.0 ms)",
           quiet, "us", 1e6, args.top)
    off_host = fit_step_cost(args.optimizer, args.batch, args.steps, no_op=True, off_host=True,
                             repeats=args.repeats)
    _print("the same with the stand-in's ufuncs, products and reductions made no-ops too (no device "
           "work on this CPU, as on a GPU host)", off_host, "us", 1e6, args.top)
    step = fit_step_cost(args.optimizer, args.batch, args.steps, repeats=args.repeats)
    _print("the same with the stand-in's kernels run by this CPU between dualconv's lines "
           "(they evict its code and data from the caches)", step, "us", 1e6, args.top)
    if args.evict_mb:
        evicted = fit_step_cost(args.optimizer, args.batch, args.steps, no_op=True, evict_mb=args.evict_mb)
        _print(f"the no-op kernels each copying {args.evict_mb:g} MB instead (the eviction alone)",
               evicted, "us", 1e6, 0)
    launch = launch_cost(args.optimizer, args.batch)
    _print("dualconv's own Python per custom launch, kernels made no-ops (goal <= 10 us)",
           launch, "us", 1e6, args.top)
    print("  custom kernel calls per step: " + ", ".join(
        f"{name} {count}" for name, count in sorted(launch["kernels"].items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
