"""Conv2D: a 2-D convolution layer (PyTorch's argument order), as im2col and one GEMM.

Forward:  col = im2col(x)                        (C*kh*kw, N*out_h*out_w)
          y   = W.reshape(O, C*kh*kw) @ col + b  (O, N*out_h*out_w)
Backward: gw  = gy @ col.T,   gb = gy summed over the columns,
          gx  = col2im(W.T @ gy)

Both calls are kernels (dualconv.kernels.conv2d_forward and conv2d_backward),
so this layer reads the same on NumPy and CuPy; the CPU twin computes the same
sums in cache-sized bands and blocks (kernels/cpu_conv.py), the GPU twin in one
launch or product each.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from .. import kernels
from ..init import get_initializer
from ..kernels.checks import check_fits, check_float
from ..shapes import Window, pair
from .base import Layer


class Conv2D(Layer):
    """y[n, o] = b[o] + sum_c cross_correlate(x[n, c], W[o, c]).

    x: (N, in_channels, H, W) -> y: (N, out_channels, out_h, out_w).
    weight: (out_channels, in_channels, kh, kw), bias: (out_channels,).
    ``in_channels=None`` is inferred at the first forward. ``padding`` is an
    int, a pair, "valid" (0) or "same" (output size = input size; stride 1).
    """

    couples_samples = False

    def __init__(self, in_channels: int | None, out_channels: int,
                 kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, dilation: int | tuple[int, int] = 1,
                 bias: bool = True, weight_init: str = "glorot") -> None:
        super().__init__()
        if out_channels is None or int(out_channels) < 1:
            raise ValueError(f"Conv2D: out_channels must be a positive int, got {out_channels!r}")
        if in_channels is not None and int(in_channels) < 1:
            raise ValueError(f"Conv2D: in_channels must be a positive int or None, got {in_channels!r}")
        self.in_channels = in_channels
        self.out_channels = int(out_channels)
        self.kh, self.kw = pair(kernel_size, "Conv2D kernel_size")
        self.sy, self.sx = pair(stride, "Conv2D stride")
        self.dy, self.dx = pair(dilation, "Conv2D dilation")
        self.padding = padding
        self.ph, self.pw = self._padding_amounts(padding)
        self.use_bias = bool(bias)
        self.weight_init = weight_init
        get_initializer(weight_init)
        for what, value in (("kernel_size", (self.kh, self.kw)), ("stride", (self.sy, self.sx)),
                            ("dilation", (self.dy, self.dx))):
            if min(value) < 1:
                raise ValueError(f"Conv2D: {what} must be >= 1, got {value}")
        if min(self.ph, self.pw) < 0:
            raise ValueError(f"Conv2D: padding must be >= 0, got {padding!r}")
        if in_channels is not None:
            self.build((1, int(in_channels), None, None))

    def _padding_amounts(self, padding: Any) -> tuple[int, int]:
        if isinstance(padding, str):
            if padding == "valid":
                return 0, 0
            if padding == "same":
                if (self.sy, self.sx) != (1, 1):
                    raise ValueError(f"Conv2D: padding='same' needs stride 1, got stride {(self.sy, self.sx)}")
                span_h, span_w = self.dy * (self.kh - 1), self.dx * (self.kw - 1)
                if span_h % 2 or span_w % 2:
                    raise ValueError(
                        f"Conv2D: padding='same' needs an odd effective kernel size, got "
                        f"kernel {(self.kh, self.kw)} with dilation {(self.dy, self.dx)}")
                return span_h // 2, span_w // 2
            raise ValueError(f"Conv2D: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        return pair(padding, "Conv2D padding")

    @cached_property  # the settings it reads are fixed at construction
    def window(self) -> Window:
        return Window(self.kh, self.kw, self.sy, self.sx, self.ph, self.pw, self.dy, self.dx)

    def _create_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        self.in_channels = int(input_shape[1])
        shape = (self.out_channels, self.in_channels, self.kh, self.kw)
        self._set_param("weight", get_initializer(self.weight_init)(shape, rng))
        if self.use_bias:
            self._set_param("bias", np.zeros(self.out_channels))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        N, _, H, W = input_shape
        if H is None:
            return (N, self.out_channels, None, None)
        out_h, out_w = check_fits(H, W, self.window, self.name)
        return (N, self.out_channels, out_h, out_w)

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        self._require_ndim(x, 4, "(N, C, H, W)")
        check_float(x, "input", self.name)
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv2D: expected {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})")
        self.output_shape(tuple(x.shape))

    def _forward(self, x: Any) -> Any:
        y, self._cache = kernels.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                                self.window)
        return y

    def _backward(self, gy: Any) -> Any:
        x_shape = self._cache[0]  # saved is (x's shape, what the twin's backward reads)
        self._check_grad_shape(gy, self._output_shape_of(x_shape))
        gx, gw, gb = kernels.conv2d_backward(gy, self._cache, self.params["weight"], self.window,
                                             need_gx=self._need_input_grad, need_gb=self.use_bias)
        self.grads["weight"] = gw
        if self.use_bias:
            self.grads["bias"] = gb
        return gx

    def get_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": (self.kh, self.kw), "stride": (self.sy, self.sx),
                "padding": self.padding if isinstance(self.padding, str) else (self.ph, self.pw),
                "dilation": (self.dy, self.dx), "bias": self.use_bias, "weight_init": self.weight_init}
