"""What the emulated device did, counted the way it would cost on a GPU.

kernel_launches  one per RawKernel call, and one per device operation that
                 launches a kernel in CuPy: each ufunc call (arithmetic and
                 comparison operators included, in-place ones too), as many
                 per reduction as CuPy launches with CUB (mean: a sum and a
                 divide; see _reductions.py), matmul/dot, copy (copy(),
                 ascontiguousarray or reshape of a non-contiguous array,
                 concatenate/stack), astype that converts, zeros/ones/full/
                 fill/arange, where/clip, fancy-index read and item assignment.
                 Views (basic slicing, transpose, reshape of a contiguous
                 array), empty() and host transfers launch nothing.
copy_bytes       bytes written by device-to-device copies: copy(),
                 ascontiguousarray/reshape copies, concatenate/stack and astype.
host_to_device   transfers to the device: asarray/array of host data, a host
                 index array used to index a device array.
device_to_host   transfers to the host: .get(), asnumpy, float/int/bool/.item()
                 /tolist() and repr of a device array.
syncs            times the host waited for the device: every device_to_host
                 transfer, and Device.synchronize / deviceSynchronize /
                 Stream.synchronize.
graph_launches   one per cupy.cuda.Graph.launch. The work a graph replays counts
                 nowhere else: work recorded during a capture runs only in its
                 graph, so it adds neither kernel_launches nor copy_bytes, at
                 capture or at replay; the other counters count work that runs
                 when it is issued.
"""
from __future__ import annotations

COUNTERS: dict[str, int] = dict(kernel_launches=0, copy_bytes=0, host_to_device=0,
                                device_to_host=0, syncs=0, graph_launches=0)


def reset() -> None:
    for key in COUNTERS:
        COUNTERS[key] = 0


def launch(copied_bytes: int = 0) -> None:
    COUNTERS["kernel_launches"] += 1
    COUNTERS["copy_bytes"] += int(copied_bytes)


def to_device() -> None:
    COUNTERS["host_to_device"] += 1


def to_host() -> None:
    COUNTERS["device_to_host"] += 1
    COUNTERS["syncs"] += 1


def sync() -> None:
    COUNTERS["syncs"] += 1
