"""cupy.cuda for the emulated device: one device, id 0, that reports itself as emulated."""
from typing import Any as _Any

from .. import _counters
from . import runtime

__all__ = ["Device", "runtime"]


class Device:
    """cupy.cuda.Device: the one emulated device."""

    def __init__(self, device: _Any = None) -> None:
        index = 0 if device is None else int(device)
        if index != 0:
            raise ValueError(f"the emulated CuPy has one device (0), got device {index}")
        self.id = 0

    @property
    def compute_capability(self) -> str:
        props = runtime.getDeviceProperties(0)
        return f"{props['major']}{props['minor']}"

    def synchronize(self) -> None:
        _counters.sync()

    def use(self) -> None:
        pass

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: _Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<CUDA Device 0>"
