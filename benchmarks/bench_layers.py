"""Conv2D forward and backward: dualconv's layer against torch's conv2d and its backward.

Sizes (N, in, out, H, W, kernel, stride, pad):
  lenet1 = LeNet conv1 (64, 1, 6, 28, 28, 5, 1, 2)
  lenet2 = LeNet conv2 (64, 6, 16, 14, 14, 5, 1, 0)
  large  = (16, 64, 64, 56, 56, 3, 1, 1), a ResNet stage-1 layer at batch 16
           (batch 64 takes a NumPy step of seconds; the GPU runs shapes like it in
           bench_kernels' xlarge bandwidth cases)

backward = gx, gw and gb from the cached forward (torch: aten.convolution_backward
with all three outputs), so it times the backward alone.
"""
from __future__ import annotations

from .common import BACKENDS, rand, require, synchronizer, to_backend

CONV_LAYERS = {
    "lenet1": (64, 1, 6, 28, 28, 5, 1, 2),
    "lenet2": (64, 6, 16, 14, 14, 5, 1, 0),
    "large": (16, 64, 64, 56, 56, 3, 1, 1),
}


class Conv2D:
    params = [BACKENDS, list(CONV_LAYERS)]
    param_names = ["backend", "size"]
    sample_time = 0.02
    repeat = (3, 10, 3.0)
    warmup_time = 0.05

    def setup(self, backend: str, size: str) -> None:
        mod = require(backend)
        N, cin, cout, H, W, k, s, p = CONV_LAYERS[size]
        self.sync = synchronizer(backend)
        x_host = rand((N, cin, H, W))
        out_hw = (H + 2 * p - k) // s + 1
        gy_host = rand((N, cout, out_hw, out_hw), seed=1)
        if backend in ("numpy", "cupy"):
            import dualconv as dc
            x, gy = to_backend(x_host, backend), to_backend(gy_host, backend)
            with dc.use_backend(backend):
                layer = dc.Conv2D(cin, cout, k, stride=s, padding=p)
            layer.to(backend)
            self.forward = lambda: layer.forward(x)
            self.backward = lambda: layer.backward(gy)
        else:
            torch = mod
            x, gy = to_backend(x_host, backend), to_backend(gy_host, backend)
            w = to_backend(rand((cout, cin, k, k), seed=2) * 0.1, backend)
            b = to_backend(rand((cout,), seed=3) * 0.1, backend)
            F, aten = torch.nn.functional, torch.ops.aten
            self.forward = lambda: F.conv2d(x, w, b, stride=s, padding=p)
            self.backward = lambda: aten.convolution_backward(
                gy, x, w, [cout], [s, s], [p, p], [1, 1], False, [0, 0], 1, [True, True, True])
        # Warm up both directions (GPU: compile kernels, cuDNN algorithm search) outside the timed body;
        # dualconv's backward reuses the cache of this forward.
        for _ in range(2):
            self.forward()
            self.backward()
        self.sync()

    def time_forward(self, backend: str, size: str) -> None:
        self.forward()
        self.sync()

    def time_backward(self, backend: str, size: str) -> None:
        self.backward()
        self.sync()
