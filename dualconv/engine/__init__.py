"""The CPU engine: a model's batch computed in parts, on every core dualconv may use.

The contract, in full:

- ``forward(layers, x)`` returns what ``for layer in layers: x = layer(x)`` returns,
  and ``backward(layers, gy, input_grad)`` what the reverse loop returns, filling each
  layer's ``grads`` (dualconv.kernels.layers_forward / layers_backward dispatch here for
  NumPy arrays; Sequential.forward and backward call those, so every training loop,
  Trainer or the user's own, gets the cores).
- Where the batch splits (parts.py): a NumPy batch whose layers all compute sample by
  sample (``layer.couples_samples`` False: BatchNorm in training couples them, and so
  does a user's layer until it says otherwise) runs in parts; each part through twins
  of the layers, copies sharing the parameters, with their own caches and gradients.
  The one thing a layer learns is ``first_sample``: where its part starts in the batch
  (Dropout counts its masks from it, so a part drops what the whole batch would).
- The result: the outputs joined in order; the gradients, the parts' sums added in part
  order. The parts depend on the batch size and the model alone, never on the number of
  cores, so one core or two give the same bits. They differ from a whole-batch pass
  only in how each batch sum is split.
- The cores (cores.py): ``num_threads()`` of them, DUALCONV_NUM_THREADS or
  ``set_num_threads(n)``; 1 runs the parts one after another on the caller. The first
  run of parts goes on the calling thread, the others on workers: forked processes on
  Linux (workers.py, their arrays through shared memory, arena.py), else threads
  (DUALCONV_WORKERS=threads chooses them). Meanwhile the BLAS is held at one thread. While
  other dualconv processes compute, a call takes its share of the cores (neighbours.py).
- Failures: the engine is an optimisation, never a requirement. A worker that cannot be
  started, cannot take a call, dies, or stops answering (checked every
  STALL_CHECK_SECONDS) has its share computed by the caller, with the same result and a
  warning, once. An exception in a layer is raised in the caller, with the worker's
  traceback as a note. ``release_workers()`` ends the workers and frees their memory.

The files: parts.py (where a batch splits), passes.py (forward and backward in parts),
cores.py (how many cores, threads, the BLAS), pinning.py (which core runs what),
neighbours.py (the cores shared with other runs), workers.py (the worker processes),
fingerprints.py (the code a worker runs), reuse.py (the twins a worker may use again),
resend.py (a step's calls sent again without pickling), arena.py (pickling through
shared memory, and answers of a known form passed without it).
"""
from __future__ import annotations

from .cores import describe, num_threads, set_num_threads, worker_kind
from .passes import backward, forward
from .workers import release_workers

__all__ = ["forward", "backward", "describe", "num_threads", "release_workers", "set_num_threads",
           "worker_kind"]
