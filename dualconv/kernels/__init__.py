"""The kernels that exist twice, and the one place that picks the CPU or GPU twin.

Twenty-one kernels exist twice. Six slide a window: im2col, col2im, and max- and
avg-pool forward and backward. Seven are fused so that a GPU step launches few
kernels (one launch each on the GPU; NumPy expressions on the CPU): sgd_update,
adam_update, softmax_cross_entropy, dropout_forward (Dropout's mask and product),
and the divergence guard's sgd_update_guarded, adam_update_guarded and
flag_nonfinite_loss; the four updates have list forms (sgd_update_many, ...: every
parameter of a model in one launch). Four are the GEMMs of the layers with weights:
conv2d_forward and conv2d_backward (im2col, one product, the bias; and the
three products of the backward), dense_forward and dense_backward. A layer
calls them and stays the textbook; how each backend makes the sums fast is the
twin's business. Two more run a model's layers, for Sequential: layers_forward and
layers_backward, the loops of reference.py; on the CPU their twin is the engine
(dualconv/engine), which runs the same loop on parts of the batch on every core.
max_pool_values is max_pool_forward without the argmax (eval mode: on the CPU it
skips finding the winners; on the GPU it is the same launch). Everything else in
dualconv is written once against ``xp`` (numpy or cupy).
Open the files in this order:

  reference.py  the textbook: each kernel as plain loops (the GEMMs as plain products)
  cpu.py        the NumPy twins of the window kernels: one loop over kernel offsets
  cpu_fused.py  the NumPy twins of the fused kernels
  cpu_conv.py   the NumPy twin of the convolution: blocks, bands of output rows,
                the bias in the GEMM, the stride-1 input gradient folded wide
  cpu_dense.py  the NumPy twin of Dense: blocked products in the input's memory order
  native.py     the compiled CPU kernels (kernels/cpu_*.c): built on first use, loaded
                through ctypes; native_conv.py, native_max_pool.py and native_optim.py
                call them for cpu_conv.py, cpu.py and cpu_fused.py where a C compiler
                was found; built_files.py keeps the built library (and the emulated
                CuPy's) on disk
  blocked.py    the cache-blocked matrix products the CPU GEMM twins use
  cuda.py       the CUDA twins: CuPy launches of kernels/*.cu (plans in cuda_plans.py)
  cuda_conv.py  the CUDA twin of the convolution: im2col launch, one cuBLAS product
  cuda_dense.py the CUDA twin of Dense: one cuBLAS product each
  cuda_many.py  the CUDA twins of the list updates: many arrays, one launch
  launch.py     what a launch is: arguments, memory orders, 32- or 64-bit indices
  plan_cache.py a plan made once per call signature, bound to each call's arrays
  layout.py     the batch-last views of the memory-order contract below
  sources.py    finds kernels/*.cu and joins them for NVRTC
  checks.py     the input checks, run here before dispatch (checks_many.py: the lists')
  twins.py      which module holds each kernel's twin
  signatures.py a call's signature, and what the dispatch remembers per signature

A layer calls a function below (hop 1), which checks its inputs once and
calls the twin for the arrays' module (hop 2); on the GPU the twin plans and
launches the kernel (hop 3). A step repeats the signatures of the step before
(each array's shape, memory order and dtype), so the check runs once per
signature (then only its per-call numbers) and the plan is made once per
signature: a repeated call on the GPU is one signature, one dict lookup and a
launch.

The names (N, C, H, W; kh, kw; sy, sx; ph, pw; dy, dx for dilation; gy, gx for
gradients; col; argmax) are Chainer's, tabled once in ARCHITECTURE.md, "Names".

The contract both twins keep: images are indexed (N, C, H, W), columns
(C, kh, kw, N, out_h, out_w); sums visit offsets ky outer, kx inner, from 0.
A convolution's weight is (O, C, kh, kw) and its bias (O,); a Dense weight is
(in, out) and its bias (out,).
Memory order, the same on both twins: images are stored batch-last
(C, H, W, N) and columns (C, kh, kw, out_h, out_w, N), and returned as views
indexed as above (layout.py), so the reshapes around a convolution's GEMM and
the pools' inputs cost no copy on either backend. Inputs in another order are
accepted: the CPU twins copy them into batch-last order, the CUDA twins read
them through their strides.

How equal the twins are: the window kernels, the four update and loss-check
kernels and dropout_forward return the same bits on both twins (the CUDA module is compiled with
--fmad=false), with one exception: the GPU flushes float32 subnormals
(|x| < 1.18e-38) to zero (CuPy's -ftz=true, kernels/common.cuh), where NumPy
keeps them. softmax_cross_entropy calls exp and log, which differ between
libraries by up to 2 ulp each, so it agrees within the bound derived in
tests/cuda/test_cuda_fused.py (about (C + 4) eps (1 + |log-sum-exp|) per row).
The four GEMM kernels make every output as one dot product, whose terms BLAS
(OpenBLAS, cuBLAS, in blocks or whole) or the compiled CPU convolution
(kernels/cpu_conv.c) may add in any order: the twins agree
with the reference and with each other within the products' rounding bound
(gamma(K) times the products of the absolute values, tests/error_bounds.py).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Sequence

import numpy as np

from ..shapes import Window
from . import checks, checks_many, checks_step
from .layout import flatten_batch  # noqa: F401  (the one view of the memory order a layer needs: Flatten)
from .signatures import Remembered

from .twins import HOMES, STEP_KERNELS, twin_for, twin_of  # noqa: F401  (public: twin_for, HOMES)

def _checks(kernel: str) -> Any:
    """The module holding kernel's check: checks_many for the list updates, else checks."""
    return checks_many if kernel in checks_many.PER_CALL else checks


class _Dispatchers(dict):
    """``_dispatch[kernel](*args)``: check the arguments once (checks.py), then run
    ``kernel`` on the twin that matches the first array: the cpu side for NumPy, the cuda
    side for CuPy.

    A signature seen before (signatures.py) passed the whole check then, so only its
    per-call numbers are checked (checks.PER_CALL), and it runs as it ran then: the twin,
    or the function the twin's module made for that signature (cuda.runner: the plan
    already bound). Each kernel's dispatcher is made at its first call
    (Remembered.dispatcher: the signature's lookup written out, one frame a call)."""

    def __missing__(self, kernel: str) -> Any:
        names, values = _checks(kernel).PER_CALL.get(kernel, ((), None))
        params = inspect.signature(globals()[kernel]).parameters  # the function below
        calls = Remembered(list(params), names, values, checks_many.ROLES.get(kernel, ()))
        made = self[kernel] = calls.dispatcher(functools.partial(_first, kernel, calls),
                                               functools.partial(_unkeyed, kernel), kernel)
        return made


_dispatch = _Dispatchers()


def _first(kernel: str, calls: Remembered, args: tuple[Any, ...]) -> Any:
    """The first call of a signature: the whole check, then the run it will take,
    ``run(*args)``: the twin's module's runner, else its twin."""
    vars(_checks(kernel))[kernel](*args)
    module = twin_of(kernel, args[0])
    runner = getattr(module, "runner", None)
    run = runner(kernel, args) if runner is not None else None
    if run is None:
        run = vars(module)[kernel]
    calls.learn(args, run)
    return run(*args)


def _unkeyed(kernel: str, args: tuple[Any, ...]) -> Any:
    """A call whose arguments have no signature (nothing remembered): the whole check, the twin."""
    vars(_checks(kernel))[kernel](*args)
    return vars(twin_of(kernel, args[0]))[kernel](*args)


def im2col(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w)."""
    return _dispatch["im2col"](x, win)


def col2im(col: Any, H: int, W: int, win: Window) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W), overlaps summed."""
    return _dispatch["col2im"](col, H, W, win)


def max_pool_forward(x: Any, win: Window) -> tuple[Any, Any]:
    """x: (N, C, H, W) -> (y, argmax), both (N, C, out_h, out_w)."""
    return _dispatch["max_pool_forward"](x, win)


def max_pool_values(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), max_pool_forward's maxima without the
    argmax (inference: on the CPU it skips finding the winners; on the GPU the same launch)."""
    return _dispatch["max_pool_values"](x, win)


def max_pool_backward(gy: Any, argmax: Any, H: int, W: int, win: Window) -> Any:
    """gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W)."""
    return _dispatch["max_pool_backward"](gy, argmax, H, W, win)


def avg_pool_forward(x: Any, win: Window) -> Any:
    """x: (N, C, H, W) -> y: (N, C, out_h, out_w), the window means (padding counts as 0)."""
    return _dispatch["avg_pool_forward"](x, win)


def avg_pool_backward(gy: Any, H: int, W: int, win: Window) -> Any:
    """gy: (N, C, out_h, out_w) -> gx: (N, C, H, W), each gradient spread over its window."""
    return _dispatch["avg_pool_backward"](gy, H, W, win)


def sgd_update(w: Any, g: Any, v: Any | None, lr: float, momentum: float,
               weight_decay: float, nesterov: bool) -> None:
    """One SGD step on w in place, and on its velocity v (None when momentum is 0)."""
    _dispatch["sgd_update"](w, g, v, lr, momentum, weight_decay, nesterov)


def adam_update(w: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float,
                eps: float, weight_decay: float, step: int) -> None:
    """One Adam step (``step`` counts from 1) on w and its moments m, v in place."""
    _dispatch["adam_update"](w, g, m, v, lr, b1, b2, eps, weight_decay, step)


def sgd_update_guarded(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                       verdict: Any, code: int, lr: float, momentum: float, weight_decay: float,
                       nesterov: bool) -> None:
    """sgd_update under fit's divergence guard (divergence.py): runs only while
    verdict[0] > code, first copies w (and v) into w_last (v_last), and sets
    verdict[0] = code + 1 when a result is not finite. verdict: int32 (1,)."""
    _dispatch["sgd_update_guarded"](w, g, v, w_last, v_last, verdict, code, lr, momentum,
                                    weight_decay, nesterov)


def adam_update_guarded(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                        verdict: Any, code: int, lr: float, b1: float, b2: float, eps: float,
                        weight_decay: float, step: int) -> None:
    """adam_update under fit's divergence guard, as sgd_update_guarded."""
    _dispatch["adam_update_guarded"](w, g, m, v, w_last, m_last, v_last, verdict, code, lr, b1,
                                     b2, eps, weight_decay, step)


def sgd_update_many(ws: Sequence[Any], gs: Sequence[Any], vs: Sequence[Any] | None, lr: float,
                    momentum: float, weight_decay: float, nesterov: bool) -> None:
    """sgd_update on every parameter: ws, gs, vs hold one array each per parameter (vs
    None when momentum is 0). One launch on the GPU, where sgd_update takes one each."""
    _dispatch["sgd_update_many"](ws, gs, vs, lr, momentum, weight_decay, nesterov)


def adam_update_many(ws: Sequence[Any], gs: Sequence[Any], ms: Sequence[Any], vs: Sequence[Any],
                     lr: float, b1: float, b2: float, eps: float, weight_decay: float,
                     step: int) -> None:
    """adam_update on every parameter, in one launch on the GPU (as sgd_update_many)."""
    _dispatch["adam_update_many"](ws, gs, ms, vs, lr, b1, b2, eps, weight_decay, step)


def sgd_update_guarded_many(ws: Sequence[Any], gs: Sequence[Any], vs: Sequence[Any] | None,
                            w_lasts: Sequence[Any], v_lasts: Sequence[Any] | None, verdict: Any,
                            code: int, lr: float, momentum: float, weight_decay: float,
                            nesterov: bool) -> None:
    """sgd_update_guarded on every parameter, in one launch on the GPU: all of them run or
    none (a non-finite result sets the verdict to code + 1, which lets the rest run)."""
    _dispatch["sgd_update_guarded_many"](ws, gs, vs, w_lasts, v_lasts, verdict, code, lr,
                                         momentum, weight_decay, nesterov)


def adam_update_guarded_many(ws: Sequence[Any], gs: Sequence[Any], ms: Sequence[Any],
                             vs: Sequence[Any], w_lasts: Sequence[Any], m_lasts: Sequence[Any],
                             v_lasts: Sequence[Any], verdict: Any, code: int, lr: float,
                             b1: float, b2: float, eps: float, weight_decay: float,
                             step: int) -> None:
    """adam_update_guarded on every parameter, as sgd_update_guarded_many."""
    _dispatch["adam_update_guarded_many"](ws, gs, ms, vs, w_lasts, m_lasts, v_lasts, verdict,
                                          code, lr, b1, b2, eps, weight_decay, step)


def flag_nonfinite_loss(loss: Any, verdict: Any, code: int) -> None:
    """The divergence guard's loss check: verdict[0] = code when the scalar loss is NaN
    or infinite and verdict[0] > code (no earlier step failed)."""
    _dispatch["flag_nonfinite_loss"](loss, verdict, code)


def dropout_forward(x: Any, key: int, p: float, first_sample: int) -> tuple[Any, Any]:
    """x: (N, ...) -> (y, mask) shaped like x: inverted dropout with the counter-based
    mask of key (reference.dropout_forward), samples counted from first_sample (even)."""
    return _dispatch["dropout_forward"](x, key, p, first_sample)


def softmax_cross_entropy(z: Any, labels: Any) -> tuple[Any, Any]:
    """z: logits (N, C), labels: ints (N,) -> (loss (N,) per row, gz (N, C), the
    gradient of loss.mean())."""
    return _dispatch["softmax_cross_entropy"](z, labels)


def layers_forward(layers: Sequence[Any], x: Any) -> Any:
    """The layers one after another: ``for layer in layers: x = layer(x)``; the last output.

    A NumPy batch runs through dualconv.engine, which computes the same loop on parts of
    the batch on each core; a CuPy batch runs the loop as written (reference.layers_forward).
    """
    if isinstance(x, np.ndarray):
        from .. import engine
        return engine.forward(layers, x)
    from .reference import layers_forward as loop
    return loop(layers, x)


def layers_backward(layers: Sequence[Any], gy: Any, input_grad: bool = True) -> Any:
    """The layers' backward in reverse order, each taking gy and returning gx; fills every
    layer's grads and returns the first layer's gx (None with ``input_grad=False``).
    The twin is chosen as in layers_forward."""
    if isinstance(gy, np.ndarray):
        from .. import engine
        return engine.backward(layers, gy, input_grad)
    from .reference import layers_backward as loop
    return loop(layers, gy, input_grad)


def conv2d_forward(x: Any, w: Any, b: Any | None, win: Window) -> tuple[Any, Any]:
    """x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> (y, saved).

    y = w @ im2col(x) + b: (N, O, out_h, out_w), stored batch-last. saved is the pair
    (x's shape, what the twin's backward reads), for conv2d_backward alone: the CPU
    twin keeps the input itself or the columns, the GPU twin the columns."""
    return _dispatch["conv2d_forward"](x, w, b, win)


def conv2d_backward(gy: Any, saved: Any, w: Any, win: Window, need_gx: bool = True,
                    need_gb: bool = True) -> tuple[Any | None, Any, Any | None]:
    """gy: (N, O, out_h, out_w), conv2d_forward's saved, w: (O, C, kh, kw) ->
    (gx (N, C, H, W) or None, gw (O, C, kh, kw), gb (O,) or None).

    gw = gy @ col.T, gb = gy summed over every output pixel, gx = col2im(w.T @ gy);
    gx only with need_gx, gb only with need_gb (a layer without a bias)."""
    return _dispatch["conv2d_backward"](gy, saved, w, win, need_gx, need_gb)


def dense_forward(x: Any, w: Any, b: Any | None) -> Any:
    """x: (N, in), w: (in, out), b: (out,) or None -> y = x @ w + b: (N, out)."""
    return _dispatch["dense_forward"](x, w, b)


def dense_backward(gy: Any, x: Any, w: Any, need_gx: bool = True,
                   need_gb: bool = True) -> tuple[Any | None, Any, Any | None]:
    """gy: (N, out), the forward's x (N, in), w: (in, out) -> (gx = gy @ w.T (N, in) or
    None, gw = x.T @ gy (in, out), gb = gy summed over the batch (out,) or None); gx is
    stored in x's memory order."""
    return _dispatch["dense_backward"](gy, x, w, need_gx, need_gb)


# ---------------------------------------------------------------- a captured step's kernels
# What a CUDA graph replays in place of per-step arguments (dualconv/step_graph.py): each
# ``*_at`` kernel is the eager one with its per-step values read from device arrays
# ("scalars at": lr_at, rates_at, code_at, step_at, key_at), and step.cu's two kernels
# advance those values and gather the batch. Checks: checks_step.py.

def _dispatch_step(kernel: str, *args: Any) -> Any:
    """_dispatch for STEP_KERNELS, whose checks live in checks_step.py."""
    getattr(checks_step, kernel)(*args)
    return getattr(twin_of(kernel, args[0]), kernel)(*args)


def step_begin(clock: Any, float_table: Any, int_table: Any, floats_now: Any, ints_now: Any) -> None:
    """Copy row s = clock[0] of float_table (steps, R) and int_table (steps, K) into
    floats_now (R,) and ints_now (K,), then clock[0] = s + 1. clock: int32 (1,)."""
    _dispatch_step("step_begin", clock, float_table, int_table, floats_now, ints_now)


def gather_rows(X: Any, y: Any, order: Any, step_at: Any, xb: Any, yb: Any) -> None:
    """xb[i] = X[order[s*B + i]], yb[i] = y[order[s*B + i]] for i < B = len(xb), s = step_at[0];
    X: (N, ...) float, y: (N,) int64, order: int64 positions; the caller keeps (s + 1) * B
    within order."""
    _dispatch_step("gather_rows", X, y, order, step_at, xb, yb)


def sgd_update_guarded_at(w: Any, g: Any, v: Any | None, w_last: Any, v_last: Any | None,
                          verdict: Any, code_at: Any, lr_at: Any, momentum: float,
                          weight_decay: float, nesterov: bool) -> None:
    """sgd_update_guarded with the code at code_at[0] (int32 (1,)) and the rate at lr_at[0]
    ((1,), w's dtype)."""
    _dispatch_step("sgd_update_guarded_at", w, g, v, w_last, v_last, verdict, code_at, lr_at,
                   momentum, weight_decay, nesterov)


def adam_update_guarded_at(w: Any, g: Any, m: Any, v: Any, w_last: Any, m_last: Any, v_last: Any,
                           verdict: Any, code_at: Any, rates_at: Any, b1: float, b2: float,
                           eps: float, weight_decay: float) -> None:
    """adam_update_guarded with the code at code_at[0] and rates_at = (lr, 1 - b1^t, 1 - b2^t)
    ((3,), w's dtype) for step t."""
    _dispatch_step("adam_update_guarded_at", w, g, m, v, w_last, m_last, v_last, verdict, code_at,
                   rates_at, b1, b2, eps, weight_decay)


def flag_nonfinite_loss_at(loss: Any, verdict: Any, step_at: Any, code_at: Any, losses: Any) -> None:
    """flag_nonfinite_loss with the code at code_at[0]; also losses[step_at[0]] = loss."""
    _dispatch_step("flag_nonfinite_loss_at", loss, verdict, step_at, code_at, losses)


def dropout_forward_at(x: Any, key_at: Any, p: float, first_sample: int) -> tuple[Any, Any]:
    """dropout_forward with the key's low and high 32 bits at key_at[0], key_at[1] (int32 (2,))."""
    return _dispatch_step("dropout_forward_at", x, key_at, p, first_sample)


def gemm(a: Any, b: Any) -> Any:
    """a (M, K) @ b (K, N) -> (M, N), each element a dot product summed k ascending (a long
    one in parts, added in order: cpu_step.gemm): the matrix product a captured step uses,
    since CuPy refuses cuBLAS during a capture (cuda_gemm.py chooses it)."""
    return _dispatch_step("gemm", a, b)
