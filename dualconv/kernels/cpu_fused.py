"""The CPU twins of the fused kernels: the optimizer updates, the loss, the divergence
guard's checks and Dropout's masks, with NumPy.

Twins of kernels/optimizers.cu, kernels/softmax_cross_entropy.cu and
kernels/dropout.cu (cuda.py launches them). The rule kept: each function makes
the operations its CUDA twin makes, in the same order and rounded to the same
dtype, so the two agree bit for bit (softmax_cross_entropy: within the bound
stated there, since exp and log differ between libraries). Inputs are checked
once, by the dispatch point (``dualconv.kernels``); these functions trust their
arguments. ``dualconv.kernels.cpu`` imports every twin here, so both modules
answer for them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import native_optim
from .layout import batch_first_axes, batch_last_axes


# ---------------------------------------------------------------- fused updates and loss
# Twins of kernels/optimizers.cu and kernels/softmax_cross_entropy.cu: the plain
# NumPy expressions, one operation at a time as the CUDA twins round them.


def sgd_update(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, lr: float, momentum: float,
               weight_decay: float, nesterov: bool) -> None:
    """One SGD step in place (PyTorch's form); v is the velocity (None when momentum is 0).

    g <- g + weight_decay * w;  v <- momentum * v + g;
    w <- w - lr * (g + momentum * v if nesterov else v)   (w <- w - lr * g without momentum).
    Every scalar is rounded to w's dtype first, and each operation rounds as written:
    the CUDA twin does the same operations in the same order.
    """
    t = w.dtype.type
    if weight_decay:
        g = g + t(weight_decay) * w
    if momentum == 0.0:
        w -= t(lr) * g
        return
    v *= t(momentum)
    v += g
    w -= t(lr) * (g + t(momentum) * v if nesterov else v)


def adam_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, b1: float,
                b2: float, eps: float, weight_decay: float, step: int) -> None:
    """One Adam step in place (step counts from 1): bias-corrected moments m, v.

    g <- g + weight_decay * w;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    w <- w - lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps).
    """
    adam_update_corrected(w, g, m, v, lr, 1 - b1 ** step, 1 - b2 ** step, b1, b2, eps, weight_decay)


def adam_update_corrected(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: Any,
                          bc1: Any, bc2: Any, b1: float, b2: float, eps: float,
                          weight_decay: float) -> None:
    """adam_update with its bias corrections bc1 = 1 - b1^step, bc2 = 1 - b2^step given, as
    the CUDA kernels take them (a captured step reads them from device tables)."""
    t = w.dtype.type
    if weight_decay:
        g = g + t(weight_decay) * w
    m *= t(b1)
    m += t(1 - b1) * g
    v *= t(b2)
    v += t(1 - b2) * (g * g)
    w -= t(lr) * (m / t(bc1)) / (np.sqrt(v / t(bc2)) + t(eps))


def softmax_cross_entropy(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax cross-entropy of logits z: (N, C) against int labels (N,) in [0, C).

    Returns (loss, gz): loss (N,) holds each row's -log softmax(z)[label], and
    gz (N, C) = (softmax(z) - onehot(labels)) / N, the gradient of loss.mean().
    Log-sum-exp is shifted by the row maximum. exp and log differ by an ulp or
    two between libraries, so the CUDA twin matches this within a stated bound,
    not bit for bit. A label outside [0, C) reads no logit, as in the CUDA twin:
    its row's loss is NaN and its gz row softmax(z) / N (the loss's range check
    reports it; see SoftmaxCrossEntropy).
    """
    N, C = z.shape
    rows = np.arange(N)
    shifted = z - z.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    gz = np.exp(log_p)
    good = (labels >= 0) & (labels < C)
    if not good.all():
        rows, labels = rows[good], labels[good]
    gz[rows, labels] -= 1
    gz /= z.dtype.type(N)
    loss = np.full(N, np.nan, z.dtype)
    loss[rows] = -log_p[rows, labels]
    return loss, gz


# ---------------------------------------------------------------- the divergence guard's kernels
# Twins of the *_guarded kernels and flag_nonfinite_loss (kernels/optimizers.cu): the
# updates above, run only while the verdict allows, after a copy of the state into the
# last-good arrays, followed by the finiteness check (dualconv/divergence.py explains).


def _guarded(verdict: np.ndarray, code: int, state: list[tuple[np.ndarray, np.ndarray]], update) -> None:
    """Run ``update()`` unless verdict[0] <= code (then nothing changes): first copy each
    live array of ``state`` (live, last) into its last, then set verdict[0] = code + 1
    if any live array holds a non-finite value."""
    if verdict[0] <= code:
        return
    for live, last in state:
        np.copyto(last, live)
    update()
    if not all(np.isfinite(live).all() for live, _ in state):
        verdict[0] = code + 1


def sgd_update_guarded(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, w_last: np.ndarray,
                       v_last: np.ndarray | None, verdict: np.ndarray, code: int, lr: float,
                       momentum: float, weight_decay: float, nesterov: bool) -> None:
    """sgd_update, unless verdict[0] <= code (then nothing changes); w (and v) are
    first copied into w_last (v_last); a non-finite result sets verdict[0] = code + 1."""
    state = [(w, w_last)] + ([] if v is None else [(v, v_last)])
    _guarded(verdict, code, state, lambda: sgd_update(w, g, v, lr, momentum, weight_decay, nesterov))


def adam_update_guarded(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray,
                        w_last: np.ndarray, m_last: np.ndarray, v_last: np.ndarray,
                        verdict: np.ndarray, code: int, lr: float, b1: float, b2: float,
                        eps: float, weight_decay: float, step: int) -> None:
    """adam_update under the guard, as sgd_update_guarded."""
    _guarded(verdict, code, [(w, w_last), (m, m_last), (v, v_last)],
             lambda: adam_update(w, g, m, v, lr, b1, b2, eps, weight_decay, step))


# Twins of the *_many kernels: the updates above on every parameter in turn. One call
# updates a whole model (tuples of arrays, one per parameter; a None role without
# momentum); on the GPU it is one launch instead of one per parameter.


def sgd_update_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray],
                    vs: Sequence[np.ndarray] | None, lr: float, momentum: float,
                    weight_decay: float, nesterov: bool) -> None:
    """sgd_update on each (ws[k], gs[k], vs[k]); by the compiled kernel where it applies
    (native_optim.py), with the same bits."""
    if native_optim.sgd_update_many(ws, gs, vs, lr, momentum, weight_decay, nesterov):
        return
    for k, w in enumerate(ws):
        sgd_update(w, gs[k], None if vs is None else vs[k], lr, momentum, weight_decay, nesterov)


def adam_update_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray], ms: Sequence[np.ndarray],
                     vs: Sequence[np.ndarray], lr: float, b1: float, b2: float, eps: float,
                     weight_decay: float, step: int) -> None:
    """adam_update on each (ws[k], gs[k], ms[k], vs[k])."""
    for k, w in enumerate(ws):
        adam_update(w, gs[k], ms[k], vs[k], lr, b1, b2, eps, weight_decay, step)


def sgd_update_guarded_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray],
                            vs: Sequence[np.ndarray] | None, w_lasts: Sequence[np.ndarray],
                            v_lasts: Sequence[np.ndarray] | None, verdict: np.ndarray, code: int,
                            lr: float, momentum: float, weight_decay: float,
                            nesterov: bool) -> None:
    """sgd_update_guarded on each parameter: all of them or, when verdict[0] <= code, none
    (a non-finite result sets verdict[0] = code + 1 > code, so the rest still run). The
    compiled kernel does it where it applies (native_optim.py), with the same bits."""
    if native_optim.sgd_update_guarded_many(ws, gs, vs, w_lasts, v_lasts, verdict, code, lr, momentum,
                                            weight_decay, nesterov):
        return
    for k, w in enumerate(ws):
        sgd_update_guarded(w, gs[k], None if vs is None else vs[k], w_lasts[k],
                           None if v_lasts is None else v_lasts[k], verdict, code, lr, momentum,
                           weight_decay, nesterov)


def adam_update_guarded_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray],
                             ms: Sequence[np.ndarray], vs: Sequence[np.ndarray],
                             w_lasts: Sequence[np.ndarray], m_lasts: Sequence[np.ndarray],
                             v_lasts: Sequence[np.ndarray], verdict: np.ndarray, code: int,
                             lr: float, b1: float, b2: float, eps: float, weight_decay: float,
                             step: int) -> None:
    """adam_update_guarded on each parameter, as sgd_update_guarded_many."""
    for k, w in enumerate(ws):
        adam_update_guarded(w, gs[k], ms[k], vs[k], w_lasts[k], m_lasts[k], v_lasts[k], verdict,
                            code, lr, b1, b2, eps, weight_decay, step)


def flag_nonfinite_loss(loss: np.ndarray, verdict: np.ndarray, code: int) -> None:
    """verdict[0] = code when the scalar loss is NaN or infinite and verdict[0] > code."""
    if not np.isfinite(loss) and verdict[0] > code:
        verdict[0] = code


# ---------------------------------------------------------------- Dropout's masks
# The twin of kernels/dropout.cu; the recipe, element by element, is
# reference.dropout_forward.

_MIX1 = np.uint32(0x7FEB352D)
_MIX2 = np.uint32(0x846CA68B)
DROPOUT_BLOCK = 1 << 16
"""Pair words hashed at a time. The final round makes about ten passes over its
words, and a block of 2**16 (256 kB of uint32) keeps them in the L2 cache."""


def lowbias32(z: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Chris Wellons' "lowbias32" integer hash, applied in place to the uint32 array z.

    Two xorshift-multiply rounds and a final xorshift: a bijection of the 32-bit
    integers (each step is invertible) with good avalanche. ``scratch``, an
    array like z, holds the shifted words (without it each shift allocates one).
    """
    if scratch is None:
        scratch = np.empty_like(z)
    for shift, multiplier in ((16, _MIX1), (15, _MIX2), (16, None)):
        np.right_shift(z, np.uint32(shift), out=scratch)
        z ^= scratch
        if multiplier is not None:
            z *= multiplier
    return z


def keyed_hash(numbers: np.ndarray, key: int) -> np.ndarray:
    """u_i = h(h(i ^ k_lo) ^ k_hi) for each uint32 number i, with h = lowbias32 and
    k_lo, k_hi the low and high halves of the 64-bit key: a bijection of the
    32-bit integers for each key. Returns a new uint32 array."""
    z = numbers.astype(np.uint32)
    z ^= np.uint32(key & 0xFFFFFFFF)
    lowbias32(z)
    z ^= np.uint32((key >> 32) & 0xFFFFFFFF)
    return lowbias32(z)


def dropout_forward(x: np.ndarray, key: int, p: float, first_sample: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout of x: (N, ...) -> (y, mask), both shaped like x, y = x * mask.

    mask is 0 where an element drops and 1/(1 - p) where it stays; which drop is
    reference.dropout_forward's recipe: for sample n (counted from first_sample,
    even, in a batch computed in parts) and feature j (row-major within the sample),
    one 32-bit word per pair of samples, lowbias32(u_j ^ u_(F + pair)), gives sample
    2m its low 16 bits and sample 2m + 1 its high 16 bits, kept when they reach
    round(p * 2**16); u is the keyed hash.

    Why this shape: a hash per element costs about twenty passes over memory. Here
    the keyed hash runs over F + N/2 numbers only, the final round over N*F/2
    words, and each word gives two samples' bits. Stored (features, N), as this
    library's batch-last activations are, the two samples of a word are neighbours
    in memory: the 16-bit halves of the words, read in place, are the bits in the
    mask's own order (little-endian, as x86, ARM and CUDA devices are). Words, masks
    and products are made DROPOUT_BLOCK words at a time, so they stay in the L2
    cache. y and mask are stored in x's memory order (made batch-last, then copied
    into x's order when that differs).
    """
    N = x.shape[0]
    F = x.size // N if N else 0
    M = (N + 1) // 2
    threshold = np.uint16(min(2**16 - 1, round(p * 2**16)))
    scale = x.dtype.type(1.0 / (1.0 - p))
    numbers = np.arange(F + M, dtype=np.uint32)
    numbers[F:] += np.uint32(first_sample // 2)
    u = keyed_hash(numbers, key)
    u_feature, u_pair = u[:F, None], u[None, F:]
    mask = np.empty((F, N), dtype=x.dtype)
    xb = x.transpose(batch_last_axes(x.ndim))
    x_rows = xb.reshape(F, N) if N and xb.flags.c_contiguous else None
    y = np.empty_like(mask) if x_rows is not None else None
    rows = max(1, DROPOUT_BLOCK // max(1, M))
    words, scratch = np.empty((rows, M), dtype=np.uint32), np.empty((rows, M), dtype=np.uint32)
    keep = np.empty((rows, N), dtype=bool)
    for r0 in range(0, F, rows):
        r1 = min(F, r0 + rows)
        w, k = words[:r1 - r0], keep[:r1 - r0]
        np.bitwise_xor(u_feature[r0:r1], u_pair, out=w)
        lowbias32(w, scratch[:r1 - r0])
        np.greater_equal(w.view(np.uint16)[:, :N], threshold, out=k)  # halves in sample order
        np.multiply(k, scale, out=mask[r0:r1])
        if y is not None:
            np.multiply(x_rows[r0:r1], mask[r0:r1], out=y[r0:r1])
    as_x = x.shape[1:] + (N,)
    mask = mask.reshape(as_x).transpose(batch_first_axes(x.ndim))
    if y is not None:
        return y.reshape(as_x).transpose(batch_first_axes(x.ndim)), mask
    stored_like_x = np.empty_like(x)  # so that x * mask and gy * mask walk both in step
    stored_like_x[...] = mask
    return x * stored_like_x, stored_like_x
