"""MaxPool2D and AvgPool2D: sliding-window pooling, overlapping windows allowed."""
from __future__ import annotations

from functools import cached_property
from typing import Any

from .. import kernels
from ..kernels.checks import check_fits, check_float
from ..shapes import Window, pair
from .base import Layer


class _Pool2D(Layer):
    """Window geometry and input checks shared by both pooling layers.

    x: (N, C, H, W) -> y: (N, C, out_h, out_w). ``stride`` defaults to the
    kernel size; a stride below it gives overlapping windows.
    """

    couples_samples = False

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.kh, self.kw = pair(kernel_size, f"{self.name} kernel_size")
        self.sy, self.sx = pair(stride if stride is not None else kernel_size, f"{self.name} stride")
        self.ph, self.pw = pair(padding, f"{self.name} padding")
        if min(self.kh, self.kw, self.sy, self.sx) < 1:
            raise ValueError(f"{self.name}: kernel_size and stride must be >= 1, got "
                             f"{(self.kh, self.kw)} and {(self.sy, self.sx)}")
        if self.ph < 0 or self.pw < 0 or 2 * self.ph > self.kh or 2 * self.pw > self.kw:
            raise ValueError(f"{self.name}: padding must be between 0 and half the kernel size, "
                             f"got padding {(self.ph, self.pw)} for kernel {(self.kh, self.kw)}")

    @cached_property  # the settings it reads are fixed at construction
    def window(self) -> Window:
        return Window(self.kh, self.kw, self.sy, self.sx, self.ph, self.pw)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        N, C, H, W = input_shape
        return (N, C, *check_fits(H, W, self.window, self.name))

    def _check_input(self, x: Any) -> None:
        super()._check_input(x)
        self._require_ndim(x, 4, "(N, C, H, W)")
        check_float(x, "input", self.name)
        self.output_shape(tuple(x.shape))

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": (self.kh, self.kw), "stride": (self.sy, self.sx),
                "padding": (self.ph, self.pw)}


class MaxPool2D(_Pool2D):
    """Each output is its window's maximum (padding never wins; first max wins ties).

    In training the forward also finds each window's winner (the argmax) for the
    backward. In eval mode it computes the maxima alone and keeps x: inference
    rarely runs a backward, and one that does (input gradients of a trained model)
    finds the winners from x then: the same argmax, so the same gradient.
    """

    def _forward(self, x: Any) -> Any:
        if self.training:
            y, argmax = kernels.max_pool_forward(x, self.window)
            self._cache = (x.shape, argmax, None)
        else:
            y = kernels.max_pool_values(x, self.window)
            self._cache = (x.shape, None, x)
        return y

    def _backward(self, gy: Any) -> Any:
        x_shape, argmax, x = self._cache
        self._check_grad_shape(gy, self._output_shape_of(x_shape))
        if argmax is None:
            argmax = kernels.max_pool_forward(x, self.window)[1]
        return kernels.max_pool_backward(gy, argmax, x_shape[2], x_shape[3], self.window)


class AvgPool2D(_Pool2D):
    """Each output is its window's mean; padding counts as zeros (PyTorch's default)."""

    def _forward(self, x: Any) -> Any:
        y = kernels.avg_pool_forward(x, self.window)
        self._cache = (x.shape, y.shape)
        return y

    def _backward(self, gy: Any) -> Any:
        x_shape, y_shape = self._cache
        self._check_grad_shape(gy, y_shape)
        return kernels.avg_pool_backward(gy, x_shape[2], x_shape[3], self.window)
