"""The CPU stand-in for CuPy (dualconv.testing.emulated_cupy): CuPy's rules, its names, its counters."""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from dualconv.testing import emulated_cupy
from dualconv.testing.fake_cupy import _native

ARANGE = r'''
extern "C" __global__ void iota(int* out, long long n) {
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = (int)i;
}
extern "C" __global__ void scale_f(const float* x, float* y, float a, long long n) {
    long long i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * a;
}
extern "C" __global__ void scale_d(const double* x, double* y, double a, long long n) {
    long long i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * a;
}
'''


def _public(obj) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_every_name_offered_exists_in_real_cupy():
    real = pytest.importorskip("cupy")
    if getattr(real, "_dualconv_emulated", False):
        pytest.skip("this process runs under DUALCONV_EMULATE_GPU=1")
    from dualconv.testing import fake_cupy as fake
    pairs = [(fake, real), (fake.ndarray, real.ndarray), (fake.cuda, real.cuda),
             (fake.cuda.runtime, real.cuda.runtime), (fake.cuda.Device, real.cuda.Device),
             (fake.RawModule, real.RawModule), (fake.RawKernel, real.RawKernel),
             (fake.random, real.random), (fake.cuda.stream, real.cuda.stream),
             (fake.cuda.graph, real.cuda.graph), (fake.cuda.memory, real.cuda.memory),
             (fake.cuda.Stream, real.cuda.Stream), (fake.cuda.Graph, real.cuda.Graph),
             (fake.cuda.MemoryPool, real.cuda.MemoryPool),
             (fake.cuda.MemoryPointer, real.cuda.MemoryPointer), (fake.lib, real.lib),
             (fake.lib.stride_tricks, real.lib.stride_tricks)]
    for stand_in, original in pairs:
        extra = sorted(n for n in _public(stand_in) if not hasattr(original, n))
        assert not extra, f"{stand_in.__name__} offers names real CuPy lacks: {extra}"
    assert len(_public(fake)) > 80  # the check above is not vacuous


def test_unimplemented_names_raise_attribute_error(cp):
    import cupyx
    for get in (lambda: cp.fft, lambda: cp.random.default_rng, lambda: cupyx.scipy,
                lambda: cp.cuda.Event, lambda: cp.ndarray.scatter_add):
        with pytest.raises(AttributeError):
            get()


def test_real_cupy_is_back_after_the_block():
    import dualconv as dc
    before, available = sys.modules.get("cupy"), dc.gpu_available()
    with emulated_cupy():
        import cupy
        assert cupy._dualconv_emulated
        assert dc.gpu_available() is True
        with dc.use_backend("cupy"):
            assert type(dc.Dense(3, 2).params["weight"]) is cupy.ndarray
    assert sys.modules.get("cupy") is before
    assert dc.gpu_available() is available


def test_device_arrays_never_become_numpy_implicitly(cp):
    d = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    assert not isinstance(d, np.ndarray)
    for convert in (np.asarray, np.array, lambda a: np.array([a]), lambda a: np.float32(1) * np.ones(3) + a):
        with pytest.raises(TypeError):
            convert(d)


def test_numpy_arrays_in_device_operations_raise_type_error(cp):
    d, h = cp.ones(3), np.ones(3)
    for op in (lambda: d + h, lambda: h + d, lambda: d * h, lambda: cp.maximum(d, h),
               lambda: d @ np.eye(3), lambda: cp.where(d > 0, h, d), lambda: cp.concatenate([d, h])):
        with pytest.raises(TypeError):
            op()


def test_numpy_functions_dispatch_to_the_device(cp, emu):
    d = cp.asarray(np.array([[1.0, -2.0], [3.0, 4.0]]))
    emu.reset_counters()
    for result in (np.exp(d), np.maximum(d, 0), np.sum(d), np.concatenate([d, d]), np.where(d > 0, d, 0)):
        assert type(result) is cp.ndarray
    assert emu.counters["device_to_host"] == 0
    with pytest.raises(TypeError):
        np.linalg.norm(d)  # not offered: NumPy finds no implementation


def test_augmented_assignment_writes_into_the_array_as_cupy_does(cp):
    """a op= b changes a itself (real CuPy's ndarray defines every in-place operator):
    a function that updates an array it was given sees the change through the caller's name."""
    start = np.array([0b1011, 6, 255], dtype=np.uint32)
    operations = [("+=", np.add), ("-=", np.subtract), ("*=", np.multiply), ("&=", np.bitwise_and),
                  ("|=", np.bitwise_or), ("^=", np.bitwise_xor), ("<<=", np.left_shift),
                  (">>=", np.right_shift), ("//=", np.floor_divide), ("%=", np.remainder),
                  ("**=", np.power)]
    for symbol, ufunc in operations:
        d = cp.asarray(start)
        alias = d
        exec(f"alias {symbol} np.uint32(3)", {"np": np}, {"alias": alias})  # the caller keeps d
        np.testing.assert_array_equal(d.get(), ufunc(start, np.uint32(3)), err_msg=symbol)


def test_reductions_are_0d_device_arrays_read_back_only_explicitly(cp, emu):
    d = cp.asarray(np.array([1.5, 2.5, -4.0]))
    total = d.sum()
    assert type(total) is cp.ndarray and total.shape == ()
    assert type(d.argmax()) is cp.ndarray and type(cp.mean(d)) is cp.ndarray
    emu.reset_counters()
    assert float(total) == 0.0 and int(d.argmax()) == 1 and bool(d.max() > 2) and d[0].item() == 1.5
    assert emu.counters["device_to_host"] == 4 and emu.counters["syncs"] == 4
    np.testing.assert_array_equal(d.get(), [1.5, 2.5, -4.0])
    np.testing.assert_array_equal(cp.asnumpy(d), [1.5, 2.5, -4.0])
    assert emu.counters["device_to_host"] == 6


def test_counters_count_launches_copies_and_transfers(cp, emu):
    h = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = cp.asarray(h)                          # transfer, no launch
    assert emu.counters == dict(kernel_launches=0, copy_bytes=0, host_to_device=1,
                                device_to_host=0, syncs=0, graph_launches=0)
    v = d.T                                     # a view: nothing
    c = cp.ascontiguousarray(v)                 # a copy kernel: 48 bytes
    y = c * 2                                   # ufunc
    y += 1                                      # in-place ufunc
    s = y.sum(axis=0)                           # reduction
    z = cp.zeros((2, 2))                        # fill kernel
    z[0, 1] = 3.0                               # item assignment
    g = d[cp.asarray(np.array([0, 2]))]         # a transfer, then a gather kernel
    f = d.astype(cp.float64)                    # a conversion kernel: 96 bytes
    d.astype(cp.float32, copy=False)            # same dtype: nothing
    e = cp.empty(5)                             # no kernel
    m = d @ d.T                                 # matmul
    assert emu.counters == dict(kernel_launches=9, copy_bytes=48 + 96, host_to_device=2,
                                device_to_host=0, syncs=0, graph_launches=0)
    assert {type(a) for a in (v, c, y, s, z, g, f, e, m)} == {cp.ndarray}
    emu.reset_counters()
    assert set(emu.counters.values()) == {0}


def test_raw_kernel_runs_the_whole_grid(cp, emu):
    module = cp.RawModule(code=ARANGE)
    out = cp.empty(1000, dtype=cp.int32)
    module.get_function("iota")((3,), (32,), (out, np.int64(1000)))  # grid-stride: 96 threads
    np.testing.assert_array_equal(out.get(), np.arange(1000))
    assert emu.counters["kernel_launches"] == 1


def test_raw_kernel_checks_arguments_against_the_signature(cp):
    iota = cp.RawModule(code=ARANGE).get_function("iota")
    out = cp.empty(8, dtype=cp.int32)
    with pytest.raises(TypeError, match="cupy arrays"):
        iota((1,), (8,), (np.empty(8, np.int32), np.int64(8)))          # a host array
    with pytest.raises(TypeError, match="int64 array, expects pointer to int32"):
        iota((1,), (8,), (cp.empty(8, dtype=cp.int64), np.int64(8)))   # wrong element type
    with pytest.raises(TypeError, match="int32 scalar, expects int64"):
        iota((1,), (8,), (out, np.int32(8)))                            # wrong scalar type
    with pytest.raises(TypeError, match="float64 scalar"):
        iota((1,), (8,), (out, 8.0))                                    # a float is a double
    with pytest.raises(TypeError, match="C-contiguous"):
        iota((1,), (8,), (cp.empty(16, dtype=cp.int32)[::2], np.int64(8)))
    with pytest.raises(TypeError, match="takes 2 arguments"):
        iota((1,), (8,), (out,))
    iota((1,), (8,), (out, 8))  # a Python int is passed as long long, as CuPy does
    with pytest.raises(KeyError):
        cp.RawModule(code=ARANGE).get_function("missing")


def test_float_kernels_flush_subnormals_double_kernels_keep_them(cp):
    module = cp.RawModule(code=ARANGE)
    if not _native.load(ARANGE, ("iota", "scale_f", "scale_d")).flushes_subnormals:
        pytest.skip("no flush-to-zero control on this CPU")
    tiny32 = np.array([1e-40, -3e-39, 2.0], np.float32)          # two float32 subnormals
    assert np.all(np.abs(tiny32[:2]) < np.finfo(np.float32).tiny)
    y = cp.empty(3, dtype=cp.float32)
    module.get_function("scale_f")((1,), (32,), (cp.asarray(tiny32), y, np.float32(1.0), np.int64(3)))
    np.testing.assert_array_equal(y.get(), [0.0, 0.0, 2.0])       # NumPy keeps them: tiny32 * 1
    tiny64 = np.array([1e-310, 2.0])
    y64 = cp.empty(2, dtype=cp.float64)
    module.get_function("scale_d")((1,), (32,), (cp.asarray(tiny64), y64, 1.0, np.int64(2)))
    np.testing.assert_array_equal(y64.get(), tiny64)              # -ftz affects float32 only


@pytest.mark.skipif(__import__("dualconv.testing.fake_cupy._raw", fromlist=["NVRTC"]).NVRTC is None,
                    reason="NVRTC (nvidia-cuda-nvrtc-cu12) not installed")
def test_nvrtc_rejects_what_would_not_compile_for_the_gpu(cp):
    from dualconv.testing.fake_cupy._raw import CompileException, cupy_options
    assert cupy_options(("--std=c++17",))[:2] == ("--std=c++17", "-ftz=true")  # after the user's
    bad = 'extern "C" __global__ void k(float* x) { x[0] = undefined_name; }'
    with pytest.raises(CompileException, match="undefined_name"):
        cp.RawModule(code=bad).compile()


def test_missing_gpp_is_reported_plainly(monkeypatch):
    monkeypatch.setattr(_native.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs g\\+\\+.*no g\\+\\+ was found"):
        _native.compiler()


def test_stand_in_modules_import_cleanly():
    with emulated_cupy():
        assert importlib.import_module("cupy.cuda.runtime").getDeviceCount() == 1
        import cupy
        assert cupy.cuda.Device().compute_capability == "90"


def test_without_gpp_the_backend_says_why(monkeypatch, tmp_path):
    from dualconv import backend
    monkeypatch.setattr(backend, "_checked", {})
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setenv("DUALCONV_EMULATION_CACHE", str(tmp_path))  # nothing built yet
    monkeypatch.setattr(_native.shutil, "which", lambda name: None)
    with emulated_cupy():
        assert backend.gpu_available() is False
        assert "needs g++" in backend.cupy_problem()
        with pytest.raises(RuntimeError, match="backend 'cupy' requested: .*needs g\\+\\+"):
            backend.set_backend("cupy")


def test_new_arrays_are_laid_out_as_cupy_lays_them_out(cp):
    """C-contiguous from ufuncs, operators, reductions, where, clip, fancy reads and copies
    (CuPy's _kernel.pyx allocates outputs with no order=; NumPy would keep the input's
    layout); the input's layout from order='K' functions: astype, cupy.copy, *_like, array."""
    x = cp.asarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)).transpose(2, 0, 1)
    c_ordered = [x + 1, cp.maximum(x, 0), -x, x > 3, x.sum(axis=0), cp.where(x > 3, x, 0),
                 cp.clip(x, 1, 5), x[cp.asarray(np.array([0, 2]))], x.copy(), x.reshape(-1, 2),
                 cp.ascontiguousarray(x)]
    for i, y in enumerate(c_ordered):
        assert y.flags.c_contiguous, i
    like_x = [x.astype(cp.float64), cp.copy(x), cp.empty_like(x), cp.zeros_like(x),
              cp.full_like(x, 2), cp.array(x), x.copy(order="K")]
    for i, y in enumerate(like_x):
        assert y.strides == tuple(s * y.itemsize // x.itemsize for s in x.strides), i
    np.testing.assert_array_equal((x + 1).get(), x.get() + 1)


def test_an_integer_index_gives_a_zero_d_view_as_in_cupy(cp):
    # CuPy's basic indexing always returns a view, down to 0-d: writing through
    # a[1] changes a, where NumPy's a[1] would be a detached scalar.
    a = cp.zeros(3, dtype=np.float32)
    element = a[1]
    assert element.ndim == 0
    element[...] = 5
    rows = cp.zeros((2, 2), dtype=np.int32)
    rows[1, 0][...] = 7
    assert a.get().tolist() == [0, 5, 0] and rows.get().tolist() == [[0, 0], [7, 0]]
