"""The CUDA twins: the kernels of kernels/*.cu, compiled once per device and launched through CuPy.

Same functions, same arguments and same memory orders as cpu.py, on cupy
arrays, with results bitwise equal to it (see the rules in
kernels/common.cuh): images are stored batch-last (C, H, W, N) and columns
(C, kh, kw, out_h, out_w, N), and returned as the same (N, C, H, W) and
(C, kh, kw, N, out_h, out_w) views. Image inputs are read through their
strides, so a batch-first or batch-last array costs no copy.

* module: every ``__global__`` template of kernels/*.cu (TEMPLATES), instantiated
  for float32 and float64 and both index widths (NAME_EXPRESSIONS), compiled by
  NVRTC once per device (get_module);
* launch: each kernel function is ``run_plan(plan_<kernel>, ...)`` with the plan of
  cuda_plans.py, made once per call signature and bound to each call's arrays
  (plan_cache.py), so a step pays for a dict lookup and a launch, not for a plan. The
  twins trust their arguments, as the plans do: the dispatch point (dualconv.kernels)
  has run checks.py once before calling them.

CuPy is imported only when a kernel runs, so this module imports without it.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable

import numpy as np

from ..shapes import Window
from .cuda_plans import (FLOAT_TYPES, INDEX_TYPES, PLANS, POOL_SIDES, plan_adam_update,
                         plan_adam_update_guarded, plan_avg_pool_backward, plan_avg_pool_forward,
                         plan_col2im, plan_dropout_forward, plan_flag_nonfinite_loss, plan_im2col,
                         plan_max_pool_backward, plan_max_pool_forward, plan_sgd_update,
                         plan_sgd_update_guarded, plan_softmax_cross_entropy)
from .launch import Launch
from .plan_cache import PlanCache
from .sources import module_source

TEMPLATES = {
    "im2col": "T, I", "col2im": "T, I",
    "max_pool_forward": "T, I, K", "max_pool_backward": "T, I, K",
    "avg_pool_forward": "T, I, K", "avg_pool_backward": "T, I, K",
    "sgd_update": "T, I", "adam_update": "T, I",
    "softmax_cross_entropy": "T, L, I", "dropout_forward": "T, I",
    "sgd_update_guarded": "T, I", "adam_update_guarded": "T, I", "flag_nonfinite_loss": "T",
    # the list updates (cuda_many.py): 64-bit indices always
    "sgd_update_many": "T", "adam_update_many": "T", "sgd_update_guarded_many": "T",
    "adam_update_guarded_many": "T",
    # a captured step's kernels (cuda_step.py): step.cu, gemm.cu and the *_at variants
    "step_begin": "T", "gather_rows": "T, I", "sgd_update_guarded_at": "T, I",
    "adam_update_guarded_at": "T, I", "flag_nonfinite_loss_at": "T", "dropout_forward_at": "T, I",
    "gemm": "T, I", "gemm_sum_parts": "T, I",
}
"""Every __global__ template in kernels/*.cu, with its template parameters:
T float type, I index type, K pooling window side, L label type (long long)."""

KERNELS = tuple(TEMPLATES)


def _instantiations(kernel: str) -> list[str]:
    names = []
    for t in FLOAT_TYPES.values():
        for i in INDEX_TYPES.values():
            params = {"T": [t], "I": [i], "K": [str(k) for k in POOL_SIDES], "L": ["long long"]}
            combos: list[list[str]] = [[]]
            for p in TEMPLATES[kernel].split(", "):
                combos = [c + [v] for c in combos for v in params[p]]
            names.extend(f"{kernel}<{', '.join(c)}>" for c in combos)
    return list(dict.fromkeys(names))  # once each, for a kernel without an index type


NAME_EXPRESSIONS = tuple(n for k in KERNELS for n in _instantiations(k))
"""The instantiations compiled into the module, e.g. "im2col<float, int>"."""

COMPILE_OPTIONS = ("--std=c++17", "--fmad=false")
"""NVRTC options (CuPy adds -ftz=true and the architecture); the compile-check
test uses them too. ``--fmad=false``: no a*b + c is contracted into an FMA, so
the fused optimizer kernels round each operation as NumPy does (bitwise parity)."""


# ---------------------------------------------------------------- CuPy

class _Functions(dict):
    """One CuPy module's kernels: ``functions[device, name]`` is the kernel ``name`` for
    ``device`` (the current one when it is asked for), looked up on a miss and kept (each
    lookup is a driver call). A hit is a plain dict lookup, with no Python frame: this runs
    once per launch."""

    def __missing__(self, key: tuple[int, str]) -> Any:
        function = self[key] = get_module().get_function(key[1])
        return function


_modules: dict[tuple[int, int], Any] = {}
_functions: dict[Any, tuple[Callable[[], int], _Functions]] = {}
"""Per CuPy module (the stand-in is another): _table's (device, functions)."""
_modules_lock = threading.Lock()


def get_module() -> Any:
    """The cupy.RawModule of every kernel for the current device, compiled once."""
    import cupy

    key = (id(cupy), cupy.cuda.runtime.getDevice())  # the CuPy module too: the stand-in is another
    with _modules_lock:
        module = _modules.get(key)
        if module is None:
            module = cupy.RawModule(code=module_source(), options=COMPILE_OPTIONS,
                                    name_expressions=NAME_EXPRESSIONS)
            module.compile()  # surface compile errors (with file:line) here
            _modules[key] = module
    return module


def get_function(name: str) -> Any:
    """The kernel ``name`` for the current device, looked up once per device."""
    import cupy

    device, functions = _table(cupy)
    return functions[device(), name]


def _table(cupy: Any) -> tuple[Callable[[], int], _Functions]:
    """(device, functions) for ``cupy`` (the module): device() is the current device,
    functions[device(), name] the kernel ``name`` there (plan_cache.Bound.run's launcher)."""
    try:
        return _functions[cupy]
    except KeyError:
        table = _functions[cupy] = (cupy.cuda.runtime.getDevice, _Functions())
        return table


_planned: dict[Callable[..., Launch], PlanCache] = {}


def _cache(plan: Callable[..., Launch]) -> PlanCache:
    try:
        return _planned[plan]
    except KeyError:
        cache = _planned[plan] = PlanCache(plan)
        return cache


def run_plan(plan: Callable[..., Launch], *args: Any) -> Any:
    """``plan(*args)``'s launch run on CuPy, the plan made once per call signature and bound
    to args (plan_cache.py): what every twin below does. Returns the outputs, as cpu.py's
    function does (None, one array or a tuple). PlanCache.run_on written out, the cache
    and the table found without a frame once made: a twin runs this once per launch."""
    import cupy

    cache = _planned.get(plan) or _cache(plan)
    device, functions = _functions.get(cupy) or _table(cupy)
    bound = cache.bound(args)
    if bound is None:
        return cache.run_unbound(args, cupy, device, functions)
    return bound.run(cupy, device, functions, *args)


def runner(kernel: str, args: tuple[Any, ...]) -> Callable[[tuple[Any, ...]], Any] | None:
    """For the dispatch point: ``run(*arguments)`` that runs ``kernel`` for any call with
    args' signature as its twin below would, its plan already bound (no twin, no cache
    lookup per call); None when the twin is more than its plan's launch (RUN_AS_PLANNED)."""
    plan = RUN_AS_PLANNED.get(kernel)
    bound = _cache(plan).bound(args) if plan is not None else None
    if bound is None:
        return None
    import cupy

    return functools.partial(bound.run, cupy, *_table(cupy))


def im2col(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w); see cpu.im2col."""
    return run_plan(plan_im2col, x, win)


def col2im(col: Any, H: int, W: int, win: Window) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W); see cpu.col2im."""
    return run_plan(plan_col2im, col, H, W, win)


def max_pool_forward(x: Any, win: Window) -> tuple[Any, Any]:
    """x: (N, C, H, W) -> (y, argmax int32), both (N, C, out_h, out_w); see cpu.max_pool_forward."""
    return run_plan(plan_max_pool_forward, x, win)


def max_pool_values(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), the maxima alone: max_pool_forward's
    one launch, which writes the argmax as it goes (dropping it saves no launch)."""
    return max_pool_forward(x, win)[0]


def max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Any:
    """gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W); see cpu.max_pool_backward."""
    return run_plan(plan_max_pool_backward, gy, argmax, H, W, win)


def avg_pool_forward(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w); see cpu.avg_pool_forward."""
    return run_plan(plan_avg_pool_forward, x, win)


def avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Any:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W); see cpu.avg_pool_backward."""
    return run_plan(plan_avg_pool_backward, gy, H, W, win)


def sgd_update(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
               weight_decay: float, nesterov: bool) -> None:
    """One SGD step in place, one launch; see cpu_fused.sgd_update."""
    run_plan(plan_sgd_update, w, g, v, lr, momentum, weight_decay, nesterov)


def adam_update(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                eps: float, weight_decay: float, step: int) -> None:
    """One Adam step in place, one launch; see cpu_fused.adam_update."""
    run_plan(plan_adam_update, w, g, m, v, lr, b1, b2, eps, weight_decay, step)


def softmax_cross_entropy(z: Any, labels: Any) -> tuple[Any, Any]:
    """z: (N, C), labels: int (N,) -> (loss (N,), gz (N, C)), one launch (labels of
    another integer dtype are converted first); see cpu_fused.softmax_cross_entropy."""
    if np.dtype(labels.dtype) != np.int64:
        labels = labels.astype(np.int64)
    return run_plan(plan_softmax_cross_entropy, z, labels)


def dropout_forward(x: Any, key: int, p: float, first_sample: int) -> tuple[Any, Any]:
    """Dropout's mask and product, one launch; see cpu_fused.dropout_forward."""
    return run_plan(plan_dropout_forward, x, key, p, first_sample)


def sgd_update_guarded(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                       verdict: Any, code: int, lr: float, momentum: float, weight_decay: float,
                       nesterov: bool) -> None:
    """One guarded SGD step in place, one launch; see cpu_fused.sgd_update_guarded."""
    run_plan(plan_sgd_update_guarded, w, g, v, w_last, v_last, verdict, code, lr, momentum,
             weight_decay, nesterov)


def adam_update_guarded(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                        verdict: Any, code: int, lr: float, b1: float, b2: float, eps: float,
                        weight_decay: float, step: int) -> None:
    """One guarded Adam step in place, one launch; see cpu_fused.adam_update_guarded."""
    run_plan(plan_adam_update_guarded, w, g, m, v, w_last, m_last, v_last, verdict, code, lr,
             b1, b2, eps, weight_decay, step)


def flag_nonfinite_loss(loss: Any, verdict: Any, code: int) -> None:
    """The guard's check of a step's loss, one launch; see cpu_fused.flag_nonfinite_loss."""
    run_plan(plan_flag_nonfinite_loss, loss, verdict, code)


RUN_AS_PLANNED = {kernel: plan for kernel, plan in PLANS.items() if kernel != "softmax_cross_entropy"}
"""The kernels whose twin above is ``run_plan(plan_<kernel>, ...)`` and nothing more
(softmax_cross_entropy first converts its labels): runner() may run their plan directly."""
