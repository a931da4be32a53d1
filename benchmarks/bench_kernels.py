"""The six kernels: im2col, col2im, max-pool and avg-pool forward/backward.

time_<kernel>(backend, size): one call (synchronized on the GPU).
  dualconv: dualconv.kernels.twin_for(xp).<kernel> (the twin, unchecked); torch peers: F.unfold (im2col),
  F.fold (col2im), F.max_pool2d / F.avg_pool2d and their aten backward ops.
KernelBandwidth.track_gbps / track_copy_gbps / track_percent_of_copy (GPU only):
  GB/s of the kernel (bytes read + bytes written, once each) timed with
  cupyx.profiler.benchmark, against a device-to-device copy of as many bytes
  measured in the same process.

Sizes (N, C, H, W, kernel, stride, pad):
  im2col / col2im: lenet1 = conv1 of LeNet (64, 1, 28, 28, 5, 1, 2),
  lenet2 = conv2 (64, 6, 14, 14, 5, 1, 0), large = (16, 64, 56, 56, 3, 1, 1),
  xlarge (GPU bandwidth only) = (64, 64, 56, 56, 3, 1, 1).
  pooling: lenet1 = pool1 (64, 6, 28, 28, 2, 2, 0), lenet2 = pool2 (64, 16, 10, 10, 2, 2, 0),
  large = overlapping (16, 64, 56, 56, 3, 2, 1), xlarge = (64, 64, 112, 112, 3, 2, 1).
"""
from __future__ import annotations

from typing import Any, Callable

from .common import BACKENDS, GPU_BACKENDS, copy_gb_per_s, gpu_seconds, rand, require, synchronizer, to_backend

CONV_SIZES = {
    "lenet1": (64, 1, 28, 28, 5, 1, 2),
    "lenet2": (64, 6, 14, 14, 5, 1, 0),
    "large": (16, 64, 56, 56, 3, 1, 1),
    "xlarge": (64, 64, 56, 56, 3, 1, 1),
}
POOL_SIZES = {
    "lenet1": (64, 6, 28, 28, 2, 2, 0),
    "lenet2": (64, 16, 10, 10, 2, 2, 0),
    "large": (16, 64, 56, 56, 3, 2, 1),
    "xlarge": (64, 64, 112, 112, 3, 2, 1),
}
SIZES = ["lenet1", "lenet2", "large"]
GPU_SIZES = SIZES + ["xlarge"]
KERNELS = ["im2col", "col2im", "max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward"]


def nbytes(a: Any) -> int:
    """Bytes of a numpy/cupy array or a torch tensor."""
    if hasattr(a, "nbytes"):
        return int(a.nbytes)
    return int(a.numel() * a.element_size())


def make_op(kernel: str, backend: str, size: str) -> tuple[Callable[[], Any], int]:
    """A zero-argument call of ``kernel`` on ``backend`` at ``size``, and the bytes it must move.

    Raises NotImplementedError (asv: skip) when the backend cannot run here.
    Inputs are built here, so the returned call does only the kernel.
    """
    mod = require(backend)
    geometry = CONV_SIZES if kernel in ("im2col", "col2im") else POOL_SIZES
    N, C, H, W, k, s, p = geometry[size]
    x = to_backend(rand((N, C, H, W)), backend)

    if backend in ("numpy", "cupy"):
        from dualconv.kernels import twin_for
        from dualconv.shapes import Window
        twin = twin_for(mod)
        win = Window(k, k, s, s, p, p)
        if kernel == "im2col":
            col = twin.im2col(x, win)
            return (lambda: twin.im2col(x, win)), nbytes(x) + nbytes(col)
        if kernel == "col2im":
            col = twin.im2col(x, win)
            return (lambda: twin.col2im(col, H, W, win)), nbytes(col) + nbytes(x)
        if kernel == "max_pool_forward":
            y, argmax = twin.max_pool_forward(x, win)
            return (lambda: twin.max_pool_forward(x, win)), nbytes(x) + nbytes(y) + nbytes(argmax)
        if kernel == "max_pool_backward":
            y, argmax = twin.max_pool_forward(x, win)
            gy = to_backend(rand(tuple(y.shape), seed=1), backend)
            return ((lambda: twin.max_pool_backward(gy, argmax, H, W, win)),
                    nbytes(gy) + nbytes(argmax) + nbytes(x))
        if kernel == "avg_pool_forward":
            y = twin.avg_pool_forward(x, win)
            return (lambda: twin.avg_pool_forward(x, win)), nbytes(x) + nbytes(y)
        if kernel == "avg_pool_backward":
            y = twin.avg_pool_forward(x, win)
            gy = to_backend(rand(tuple(y.shape), seed=1), backend)
            return (lambda: twin.avg_pool_backward(gy, H, W, win)), nbytes(gy) + nbytes(x)
        raise ValueError(kernel)

    torch = mod
    F = torch.nn.functional
    aten = torch.ops.aten
    if kernel == "im2col":
        col = F.unfold(x, (k, k), padding=p, stride=s)
        return (lambda: F.unfold(x, (k, k), padding=p, stride=s)), nbytes(x) + nbytes(col)
    if kernel == "col2im":
        col = F.unfold(x, (k, k), padding=p, stride=s)
        return (lambda: F.fold(col, (H, W), (k, k), padding=p, stride=s)), nbytes(col) + nbytes(x)
    if kernel == "max_pool_forward":
        y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        return (lambda: F.max_pool2d(x, k, s, p, return_indices=True)), nbytes(x) + nbytes(y) + nbytes(idx)
    if kernel == "max_pool_backward":
        y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        gy = to_backend(rand(tuple(y.shape), seed=1), backend)
        return ((lambda: aten.max_pool2d_with_indices_backward(gy, x, [k, k], [s, s], [p, p], [1, 1], False, idx)),
                nbytes(gy) + nbytes(idx) + nbytes(x))
    if kernel == "avg_pool_forward":
        y = F.avg_pool2d(x, k, s, p)
        return (lambda: F.avg_pool2d(x, k, s, p)), nbytes(x) + nbytes(y)
    if kernel == "avg_pool_backward":
        y = F.avg_pool2d(x, k, s, p)
        gy = to_backend(rand(tuple(y.shape), seed=1), backend)
        return ((lambda: aten.avg_pool2d_backward(gy, x, [k, k], [s, s], [p, p], False, True, None)),
                nbytes(gy) + nbytes(x))
    raise ValueError(kernel)


class _KernelTime:
    """time_<kernel>(backend, size): wall time of one call, GPU work synchronized."""

    kernel = ""
    params = [BACKENDS, SIZES]
    param_names = ["backend", "size"]
    sample_time = 0.02
    repeat = (3, 10, 2.0)
    warmup_time = 0.05

    def setup(self, backend: str, size: str) -> None:
        self.op, self.bytes = make_op(self.kernel, backend, size)
        self.sync = synchronizer(backend)
        self.op()  # compile (GPU) and warm up outside the timed body
        self.sync()

    def _time(self) -> None:
        self.op()
        self.sync()


class Im2col(_KernelTime):
    kernel = "im2col"

    def time_im2col(self, backend: str, size: str) -> None:
        self._time()


class Col2im(_KernelTime):
    kernel = "col2im"

    def time_col2im(self, backend: str, size: str) -> None:
        self._time()


class MaxPoolForward(_KernelTime):
    kernel = "max_pool_forward"

    def time_max_pool_forward(self, backend: str, size: str) -> None:
        self._time()


class MaxPoolBackward(_KernelTime):
    kernel = "max_pool_backward"

    def time_max_pool_backward(self, backend: str, size: str) -> None:
        self._time()


class AvgPoolForward(_KernelTime):
    kernel = "avg_pool_forward"

    def time_avg_pool_forward(self, backend: str, size: str) -> None:
        self._time()


class AvgPoolBackward(_KernelTime):
    kernel = "avg_pool_backward"

    def time_avg_pool_backward(self, backend: str, size: str) -> None:
        self._time()


class KernelBandwidth:
    """GPU only: kernel GB/s against a device-to-device copy of the same bytes, same process.

    Bytes counted: every input read once plus every output written once (the
    minimum any implementation must move); the copy counts read + write too.
    Timing: cupyx.profiler.benchmark (CUDA events after a sync); the kernel is
    compiled and warmed in setup. Skipped without CuPy and a GPU (the
    torch-cuda peer is timed with the same profiler, so it needs CuPy too).
    """

    params = [KERNELS, GPU_BACKENDS, GPU_SIZES]
    param_names = ["kernel", "backend", "size"]
    rounds = 1
    unit = "GB/s"

    def setup(self, kernel: str, backend: str, size: str) -> None:
        require(backend)
        self.n_repeat = 50
        self.op, self.bytes = make_op(kernel, backend, size)
        sync = synchronizer(backend)
        self.op()
        sync()
        self.copy_gbps = copy_gb_per_s(self.bytes // 2, n_repeat=self.n_repeat)

    def _kernel_gbps(self) -> float:
        return self.bytes / gpu_seconds(self.op, n_repeat=self.n_repeat) / 1e9

    def track_gbps(self, kernel: str, backend: str, size: str) -> float:
        return self._kernel_gbps()

    def track_copy_gbps(self, kernel: str, backend: str, size: str) -> float:
        return self.copy_gbps

    def track_percent_of_copy(self, kernel: str, backend: str, size: str) -> float:
        return 100.0 * self._kernel_gbps() / self.copy_gbps

    track_percent_of_copy.unit = "%"  # type: ignore[attr-defined]
