"""Stream capture and CUDA graphs on the emulated CuPy: recorded, not run; replayed by
Graph.launch; refused where CuPy 14 refuses; memory pools that reuse freed blocks."""
from __future__ import annotations

import numpy as np
import pytest

from dualconv.testing import emulated_cupy

SCALE = r'''
extern "C" __global__ void axpy_f(const float* x, float* y, float a, long long n) {
    long long i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * x[i];
}
'''


def _step(cp, x, w, kernel, lr):
    """A small update: out-of-place ufuncs, a reduction, in-place ufuncs, setitem, a kernel."""
    y = x * 2 + w
    w -= np.float32(0.25) * y
    w *= y.mean() / (y.max() + np.float32(1))
    w[1:3] = w[0:2] + np.float32(1)
    kernel((1,), (8,), (x, w, np.float32(lr), np.int64(x.size)))


def test_stream_context_makes_the_stream_current(cp):
    stream = cp.cuda.Stream(non_blocking=True)
    assert cp.cuda.get_current_stream() == cp.cuda.Stream.null
    with stream:
        assert cp.cuda.get_current_stream() == stream
        assert not stream.is_capturing()
    assert cp.cuda.get_current_stream() == cp.cuda.Stream.null


def test_replay_equals_the_eager_run_and_capture_runs_nothing(cp, emu):
    kernel = cp.RawModule(code=SCALE).get_function("axpy_f")
    start = np.linspace(-1, 1, 6, dtype=np.float32)
    x_eager, w_eager = cp.asarray(start), cp.asarray(start[::-1].copy())
    x, w = cp.asarray(start), cp.asarray(start[::-1].copy())
    for _ in range(3):
        _step(cp, x_eager, w_eager, kernel, 0.5)
    emu.reset_counters()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        assert stream.is_capturing()
        _step(cp, x, w, kernel, 0.5)
        graph = stream.end_capture()
    assert emu.counters["kernel_launches"] == 0
    np.testing.assert_array_equal(w.get(), start[::-1])  # nothing ran during the capture
    for _ in range(3):
        graph.launch(stream)
    np.testing.assert_array_equal(w.get(), w_eager.get())
    assert emu.counters["graph_launches"] == 3
    assert emu.counters["kernel_launches"] == 0
    (w + 1).get()
    assert emu.counters["kernel_launches"] == 1  # eager work still counts


def test_memory_allocated_during_capture_is_poisoned_until_the_graph_runs(cp):
    x = cp.arange(4, dtype=cp.float32)
    stream = cp.cuda.Stream()
    with stream:
        stream.begin_capture()
        y = x * 2
        z = cp.zeros(3, dtype=cp.int32)
        graph = stream.end_capture()
    assert np.isnan(y.get()).all()
    assert (z.get() == -1).all()  # 0xFF bytes
    graph.launch()
    np.testing.assert_array_equal(y.get(), [0, 2, 4, 6])
    np.testing.assert_array_equal(z.get(), [0, 0, 0])


def test_a_scalar_passed_by_value_is_frozen_at_capture(cp):
    """A per-step learning rate given to a kernel as a float is recorded once: the replays
    differ from an eager run that changes it, and agree when it lives on the device."""
    kernel = cp.RawModule(code=SCALE).get_function("axpy_f")
    x = cp.ones(4, dtype=cp.float32)
    eager, frozen, resident = (cp.zeros(4, dtype=cp.float32) for _ in range(3))
    lr_device = cp.zeros(1, dtype=cp.float32)
    rates = [0.5, 0.25, 0.125]
    for lr in rates:
        kernel((1,), (4,), (x, eager, np.float32(lr), np.int64(4)))
    stream = cp.cuda.Stream(non_blocking=True)
    lr = rates[0]
    with stream:
        stream.begin_capture()
        kernel((1,), (4,), (x, frozen, np.float32(lr), np.int64(4)))
        resident += x * lr_device
        graph = stream.end_capture()
    for lr in rates:
        lr_device.fill(lr)
        graph.launch()
    np.testing.assert_array_equal(frozen.get(), [1.5] * 4)  # 3 x 0.5: the first rate, frozen
    np.testing.assert_array_equal(resident.get(), eager.get())
    assert not np.array_equal(frozen.get(), eager.get())


def _refused(cp, stream, work, error, match):
    with stream:
        stream.begin_capture()
        with pytest.raises(error, match=match):
            work()
        try:
            stream.end_capture()
        except cp.cuda.runtime.CUDARuntimeError:
            pass  # a refused synchronization invalidates the capture, as in CUDA


def test_transfers_host_reads_and_syncs_raise_during_capture(cp):
    d = cp.arange(4, dtype=cp.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    h2d = [lambda: cp.asarray(np.ones(3)), lambda: d[np.array([0, 1])],
           lambda: d.__setitem__(slice(None), np.ones(4, np.float32))]
    d2h = [d.get, lambda: cp.asnumpy(d), lambda: float(d.sum()), lambda: int(d[0]),
           lambda: bool(d[0] > 0), lambda: d[0].item(), lambda: d.tolist(), lambda: repr(d),
           lambda: cp.where(d > 1)]
    for work in h2d:
        _refused(cp, stream, work, RuntimeError, "capturing, so H2D transfers are disallowed")
    for work in d2h:
        _refused(cp, stream, work, RuntimeError, "capturing, so D2H transfers are disallowed")
    for work in (stream.synchronize, cp.cuda.Device().synchronize, cp.cuda.runtime.deviceSynchronize):
        _refused(cp, stream, work, cp.cuda.runtime.CUDARuntimeError, "cudaErrorStreamCaptureUnsupported")
    a = cp.ones((2, 2), dtype=cp.float32)
    for work in (lambda: a @ a, lambda: cp.matmul(a, a), lambda: a.dot(a)):
        _refused(cp, stream, work, NotImplementedError, "cuBLAS API during stream capture")
    with stream:
        stream.begin_capture()
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
            stream.synchronize()
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
            stream.end_capture()


def test_capture_on_the_default_stream_raises(cp):
    with pytest.raises(RuntimeError, match="cannot capture on the default"):
        cp.cuda.Stream.null.begin_capture()
    with pytest.raises(RuntimeError, match="cannot capture on the default"):
        cp.cuda.get_current_stream().begin_capture()
    with pytest.raises(NotImplementedError):
        cp.cuda.Graph()


def test_reused_memory_shows_a_graph_writing_into_a_freed_buffer():
    """A capture's temporary, freed afterwards, goes back to the default pool; the next
    array of its size gets that memory, and every replay overwrites it."""
    with emulated_cupy(reuse_memory=True):
        import cupy as cp
        x, out = cp.arange(4, dtype=cp.float32), cp.zeros(4, dtype=cp.float32)
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            tmp = x * 2
            out += tmp
            graph = stream.end_capture()
        del tmp
        bystander = cp.full(4, 5, dtype=cp.float32)
        graph.launch()
        np.testing.assert_array_equal(bystander.get(), [0, 2, 4, 6])  # spoiled by the graph


def test_a_private_pool_keeps_the_graphs_memory_apart():
    with emulated_cupy(reuse_memory=True):
        import cupy as cp
        x, out = cp.arange(4, dtype=cp.float32), cp.zeros(4, dtype=cp.float32)
        default, pool = cp.get_default_memory_pool(), cp.cuda.MemoryPool()
        in_use = default.used_bytes()
        stream = cp.cuda.Stream(non_blocking=True)
        with stream, cp.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            tmp = x * 2
            out += tmp
            graph = stream.end_capture()
        assert pool.used_bytes() == 512 and default.used_bytes() == in_use
        del tmp
        assert pool.used_bytes() == 0 and pool.free_bytes() == 512
        bystander = cp.full(4, 5, dtype=cp.float32)
        graph.launch()
        graph.launch()
        np.testing.assert_array_equal(bystander.get(), [5, 5, 5, 5])
        np.testing.assert_array_equal(out.get(), [0, 4, 8, 12])


def test_the_pool_hands_a_freed_block_to_the_next_allocation_of_its_size():
    with emulated_cupy(reuse_memory=True):
        import cupy as cp
        pool = cp.get_default_memory_pool()
        a = cp.full(100, 7, dtype=cp.float32)
        used = pool.used_bytes()
        del a
        assert pool.used_bytes() == used - 512
        b = cp.empty(128, dtype=cp.float32)  # 512 bytes too: the same block, its old bytes
        np.testing.assert_array_equal(b[:100].get(), np.full(100, 7, np.float32))
        pool.free_all_blocks()
        assert pool.n_free_blocks() == 0


def test_a_capture_left_open_ends_with_its_block():
    with emulated_cupy():
        import cupy as cp
        stream = cp.cuda.Stream(non_blocking=True)
        stream.use()
        stream.begin_capture()
        cp.cuda.set_allocator(cp.cuda.MemoryPool().malloc)
    with emulated_cupy():
        import cupy as cp
        assert cp.cuda.get_current_stream() == cp.cuda.Stream.null
        assert float(cp.ones(3).sum()) == 3.0  # runs: nothing captures any more
        assert cp.cuda.get_allocator() == cp.get_default_memory_pool().malloc


def test_a_graph_launched_into_a_capture_becomes_part_of_it(cp, emu):
    x = cp.zeros(2, dtype=cp.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        x += 1
        inner = stream.end_capture()
        stream.begin_capture()
        inner.launch()
        x *= 3
        outer = stream.end_capture()
    outer.launch()
    np.testing.assert_array_equal(x.get(), [3, 3])
    assert emu.counters["graph_launches"] == 1


def test_the_legacy_stream_cannot_run_beside_a_capturing_blocking_stream(cp, emu):
    """A blocking stream's capture would make legacy-stream work wait on it: CUDA refuses
    and invalidates the capture. A non-blocking stream's capture lets it run now."""
    x = cp.zeros(2, dtype=cp.float32)
    blocking = cp.cuda.Stream()
    blocking.begin_capture()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="StreamCaptureImplicit"):
        x += 1
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
        blocking.end_capture()
    apart = cp.cuda.Stream(non_blocking=True)
    apart.begin_capture()
    x += 1  # on the legacy stream, which is not capturing: runs now
    apart.end_capture()
    np.testing.assert_array_equal(x.get(), [1, 1])


def test_the_global_capture_mode_refuses_new_device_memory(cp):
    stream = cp.cuda.Stream(non_blocking=True)
    x = cp.ones(4, dtype=cp.float32)
    cp.get_default_memory_pool().free_all_blocks()
    with stream:
        stream.begin_capture(mode=cp.cuda.runtime.streamCaptureModeGlobal)
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="StreamCaptureUnsupported"):
            x * 2  # the pool has no free block: cudaMalloc, an unsafe call in this mode
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
            stream.end_capture()
