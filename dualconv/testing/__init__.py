"""Testing tools: finite-difference gradient checks, and a CuPy stand-in for CPU-only machines.

* ``check_layer_gradients``, ``check_loss_gradients``, ``numerical_gradient``:
  see dualconv.testing.gradients.
* ``emulated_cupy()``: within the block ``import cupy`` gives a CPU stand-in
  that behaves like CuPy 14 (its strictness, its kernels compiled from the same
  CUDA source by g++) and counts launches, copies, transfers and syncs; see
  dualconv.testing.emulation. ``DUALCONV_EMULATE_GPU=1`` does the same for a
  whole process.
"""
from .emulation import Emulation, emulated_cupy
from .gradients import Layer, Loss, check_layer_gradients, check_loss_gradients, numerical_gradient

__all__ = ["Emulation", "emulated_cupy", "Layer", "Loss", "check_layer_gradients",
           "check_loss_gradients", "numerical_gradient"]
