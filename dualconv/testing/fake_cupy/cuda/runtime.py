"""cupy.cuda.runtime for the emulated device (an H100-like device backed by the CPU)."""
from typing import Any as _Any

from .. import _device
from .._device import CUDARuntimeError

__all__ = ["getDeviceCount", "getDevice", "memGetInfo", "getDeviceProperties", "runtimeGetVersion",
           "driverGetVersion", "deviceSynchronize", "CUDARuntimeError", "streamPerThread",
           "streamCaptureModeGlobal", "streamCaptureModeThreadLocal", "streamCaptureModeRelaxed"]

streamPerThread = 2
streamCaptureModeGlobal, streamCaptureModeThreadLocal, streamCaptureModeRelaxed = 0, 1, 2

_NAME = b"dualconv emulated GPU (CPU, g++ kernels)"
_MEMORY = {"total": 16 << 30}
"""Device memory the emulated device reports; emulated_cupy(memory_bytes=...) sets it."""


def getDeviceCount() -> int:
    return 1


def getDevice() -> int:
    return 0


def memGetInfo() -> tuple[int, int]:
    """(free, total) bytes."""
    return _MEMORY["total"], _MEMORY["total"]


def getDeviceProperties(device: int) -> dict[str, _Any]:
    if int(device) != 0:
        raise ValueError(f"the emulated CuPy has one device (0), got device {device}")
    return {"name": _NAME, "totalGlobalMem": _MEMORY["total"], "multiProcessorCount": 132,
            "major": 9, "minor": 0, "warpSize": 32, "maxThreadsPerBlock": 1024}


def runtimeGetVersion() -> int:
    return 12090


def driverGetVersion() -> int:
    return 12090


def deviceSynchronize() -> None:
    """Wait for the device (one sync); refused while a stream captures."""
    _device.synchronize()
