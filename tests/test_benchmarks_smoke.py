"""Smoke tests of the asv suite in benchmarks/: it imports, sets up and runs one call per kind.

No speed is asserted (timings depend on the machine); these only keep the suite
from rotting between `asv run`s. Small sizes only; the torch peers are tried
when PyTorch is installed, the GPU backends are checked to skip without a GPU.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import dualconv as dc  # noqa: E402
from benchmarks import (bench_inference, bench_kernels, bench_layers, bench_training, common,  # noqa: E402
                        machine_info, results_table)
from error_bounds import assert_within, sum_bound  # noqa: E402

BENCH_MODULES = [bench_inference, bench_kernels, bench_layers, bench_training]
PREFIXES = ("time_", "track_", "peakmem_", "mem_")


def _benchmark_classes():
    for module in BENCH_MODULES:
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and not name.startswith("_") and obj.__module__ == module.__name__:
                if any(m.startswith(PREFIXES) for m in dir(obj)):
                    yield obj


def test_every_benchmark_has_a_backend_parameter_and_setup():
    classes = list(_benchmark_classes())
    assert len(classes) >= 9
    for cls in classes:
        assert "backend" in cls.param_names, cls
        assert len(cls.params) == len(cls.param_names), cls
        assert callable(getattr(cls, "setup", None)), cls


def test_asv_conf_points_at_this_suite():
    text = open(os.path.join(ROOT, "asv.conf.json")).read()
    conf = json.loads("\n".join(line for line in text.splitlines() if not line.strip().startswith("//")))
    assert conf["benchmark_dir"] == "benchmarks"
    assert conf["results_dir"] == "benchmarks/results"
    assert conf["matrix"] == {}


@pytest.mark.skipif(dc.gpu_available(), reason="a GPU is here: the GPU backends run instead of skipping")
@pytest.mark.parametrize("backend", common.GPU_BACKENDS)
def test_gpu_backends_skip_without_a_gpu(backend):
    with pytest.raises(NotImplementedError):
        common.require(backend)
    with pytest.raises(NotImplementedError):
        bench_kernels.KernelBandwidth().setup("im2col", backend, "lenet2")


def _backends():
    out = ["numpy"]
    try:
        import torch  # noqa: F401
        out.append("torch")
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kernel", bench_kernels.KERNELS)
def test_kernel_ops_run(kernel, backend):
    op, nbytes = bench_kernels.make_op(kernel, backend, "lenet2")
    op()
    assert nbytes > 0


def _recorded(bench, attr: str) -> list:
    """Replace the zero-argument call ``bench.<attr>`` by one that records what it returns."""
    original, returned = getattr(bench, attr), []

    def call():
        returned.append(original())
        return returned[-1]
    setattr(bench, attr, call)
    return returned


def _numpy(a) -> np.ndarray:
    return a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)


def _one_timed_call(cls, backend: str) -> np.ndarray:
    """Set up a kernel benchmark at lenet2, run its time_ method, check that it made exactly
    one call of the kernel, and return what that call returned."""
    bench = cls()
    bench.setup(backend, "lenet2")
    returned = _recorded(bench, "op")
    getattr(bench, f"time_{cls.kernel}")(backend, "lenet2")
    assert len(returned) == 1
    return _numpy(returned[0])


@pytest.mark.parametrize("backend", _backends())
def test_im2col_time_class_times_one_im2col(backend):
    """lenet2's im2col (N 64, C 6, 14x14, 5x5, stride 1, no padding): one call, whose
    columns are the input's pixels, col[c, ky, kx, n, oy, ox] = x[n, c, oy + ky, ox + kx]."""
    N, C, H, W, k, _, _ = bench_kernels.CONV_SIZES["lenet2"]
    col = _one_timed_call(bench_kernels.Im2col, backend)
    out_h, out_w = H - k + 1, W - k + 1
    if backend == "torch":  # F.unfold: (N, C*kh*kw, out_h*out_w)
        col = col.reshape(N, C, k, k, out_h, out_w).transpose(1, 2, 3, 0, 4, 5)
    assert col.shape == (C, k, k, N, out_h, out_w)
    x = common.rand((N, C, H, W))
    for ky in range(k):
        for kx in range(k):
            assert_array_equal(col[:, ky, kx], x[:, :, ky:ky + out_h, kx:kx + out_w].transpose(1, 0, 2, 3))


@pytest.mark.parametrize("backend", _backends())
def test_max_pool_backward_time_class_times_one_backward(backend):
    """lenet2's 2x2 stride-2 pool: one call, which puts each gy at its window's maximum
    of x and zeros elsewhere."""
    N, C, H, W, k, _, _ = bench_kernels.POOL_SIZES["lenet2"]
    gx = _one_timed_call(bench_kernels.MaxPoolBackward, backend)
    assert gx.shape == (N, C, H, W)
    windows = common.rand((N, C, H, W)).reshape(N, C, H // k, k, W // k, k).transpose(0, 1, 2, 4, 3, 5)
    winner = windows.reshape(N, C, H // k, W // k, k * k).argmax(axis=-1)
    gy = common.rand((N, C, H // k, W // k), seed=1)
    expected = (np.arange(k * k) == winner[..., None]) * gy[..., None]
    expected = expected.reshape(N, C, H // k, W // k, k, k).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H, W)
    assert_array_equal(gx, expected)


@pytest.mark.parametrize("backend", _backends())
def test_conv_layer_benchmark_times_one_forward_and_one_backward(backend):
    """lenet2's conv2 (64 x 6 x 14 x 14 -> 16 channels, 5x5): forward gives (64, 16, 10, 10);
    backward gives gx (64, 6, 14, 14) (torch: with gw and gb, gb being gy summed)."""
    N, cin, cout, H, W, k, _, _ = bench_layers.CONV_LAYERS["lenet2"]
    bench = bench_layers.Conv2D()
    bench.setup(backend, "lenet2")
    forwards, backwards = _recorded(bench, "forward"), _recorded(bench, "backward")
    bench.time_forward(backend, "lenet2")
    bench.time_backward(backend, "lenet2")
    assert len(forwards) == 1 and len(backwards) == 1
    out = (N, cout, H - k + 1, W - k + 1)
    assert _numpy(forwards[0]).shape == out
    if backend == "torch":
        gx, gw, gb = (_numpy(g) for g in backwards[0])
        assert gw.shape == (cout, cin, k, k)
        gy = common.rand(out, seed=1).astype(np.float64)
        assert_within(gb, gy.sum(axis=(0, 2, 3)), 2 * sum_bound(gy, axis=(0, 2, 3), dtype=np.float32))
    else:
        gx = _numpy(backwards[0])
    assert gx.shape == (N, cin, H, W)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("model", bench_training.MODELS)
def test_train_step_benchmark_runs_one_step(model, backend, monkeypatch):
    """time_train_step runs exactly one training step (one optimizer step), of a finite loss."""
    losses, updates = [], []
    if backend == "torch":
        import torch
        sgd_step, loss_forward = torch.optim.SGD.step, torch.nn.CrossEntropyLoss.forward

        def counted_step(self, *args, **kwargs):
            updates.append(1)
            return sgd_step(self, *args, **kwargs)

        def recorded_loss(self, *args):
            out = loss_forward(self, *args)
            losses.append(float(out.detach()))
            return out
        monkeypatch.setattr(torch.optim.SGD, "step", counted_step)
        monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", recorded_loss)
    else:
        train_step = dc.Trainer.train_step

        def recorded_step(self, *args):
            out = train_step(self, *args)
            losses.append(float(out[0]))
            updates.append(1)
            return out
        monkeypatch.setattr(dc.Trainer, "train_step", recorded_step)
    bench = bench_training.TrainStep()
    bench.setup(model, backend, 64)
    losses.clear()  # the warm-up steps of setup
    updates.clear()
    bench.time_train_step(model, backend, 64)
    assert len(updates) == 1 and len(losses) == 1
    assert np.isfinite(losses[0]) and losses[0] > 0
    bench.peakmem_train_step(model, backend, 64)
    rate = common.images_per_second(bench.step, bench.sync, 64, min_steps=1, min_seconds=0.0)
    assert rate > 0


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("model", bench_training.MODELS)
def test_predict_benchmark_makes_every_output(model, backend):
    """The inference benchmark's call returns one finite row of 10 logits per image, the
    same each time (eval mode: no dropout), and its rate is a positive number."""
    predict = bench_inference.make_predict(model, backend, images=48)
    first, again = _numpy(predict()), _numpy(predict())
    assert first.shape == (48, 10) and np.isfinite(first).all()
    assert_array_equal(first, again)
    bench = bench_inference.Predict()
    assert bench_inference.Predict.param_names == ["model", "backend"]
    bench.predict, bench.sync = predict, common.synchronizer(backend)
    assert bench.track_images_per_second(model, backend) > 0


def test_results_table_reads_an_asv_results_file(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "box").mkdir(parents=True)
    (results / "benchmarks.json").write_text(json.dumps({
        "bench_layers.Conv2D.time_forward": {"param_names": ["backend", "size"], "unit": "seconds"},
        "bench_training.TrainStep.track_images_per_second": {
            "param_names": ["model", "backend", "batch"], "unit": "images/s"},
        "version": 2}))
    (results / "box" / "machine.json").write_text("{}")
    (results / "box" / "abc-existing.json").write_text(json.dumps({
        "commit_hash": "abcdef0123", "date": 1, "params": {"machine": "box"},
        "result_columns": ["result", "params", "version"],
        "results": {
            "bench_layers.Conv2D.time_forward": [
                [0.002, None, 0.001, None], [["'numpy'", "'cupy'", "'torch'", "'torch-cuda'"], ["'lenet2'"]], "v"],
            "bench_training.TrainStep.track_images_per_second": [
                [9000.0, float("nan")], [["'lenet'"], ["'numpy'", "'torch'"], ["64"]], "v"],
        }}))
    results_table.main(["--results-dir", str(results)])
    out = capsys.readouterr().out
    assert "| Conv2D.time_forward | size=lenet2 | seconds | 2 ms | 1 ms | 2.00 |" in out
    assert "| TrainStep.track_images_per_second | model=lenet, batch=64 | images/s | 9000 | - | - |" in out
    assert "cupy" not in out.splitlines()[1]


def test_machine_description_names_family_and_model(monkeypatch):
    # a VM may give every generation of a CPU one name: family and model numbers tell them apart
    amd = {"vendor_id": "AuthenticAMD", "model name": "AMD Server CPU", "cpu family": "25", "model": "17",
           "flags": "fpu avx2 avx512f"}
    monkeypatch.setattr(machine_info, "_cpuinfo", lambda: amd)
    assert machine_info.cpu_model() == "AMD Server CPU (family 25, model 17)"
    assert machine_info.machine_kind().startswith("amd-avx512-")
    monkeypatch.setattr(machine_info, "_cpuinfo", lambda: {"model name": "Some CPU"})
    assert machine_info.cpu_model() == "Some CPU"


@pytest.mark.skipif(shutil.which("g++") is None, reason="the emulated CuPy needs g++")
def test_gpu_host_cost_profiles_dualconvs_own_files_per_step_and_per_launch():
    """benchmarks/gpu_host_cost.py on a small fit: self time per file of dualconv (its
    stand-in for CuPy, dualconv/testing, left out), LeNet's launches counted; the asv
    class reads its two figures from what it measured."""
    from benchmarks import bench_gpu_host_cost, gpu_host_cost
    step = gpu_host_cost.fit_step_cost("sgd-momentum", batch=8, steps=4)
    launch = gpu_host_cost.launch_cost("sgd-momentum", batch=8, replays=2)
    for cost in (step, launch):
        assert cost["seconds"] > 0 and cost["seconds"] == pytest.approx(sum(cost["files"].values()))
        assert all(f.startswith("dualconv/") and not f.startswith("dualconv/testing/")
                   for f in cost["files"]), cost["files"]
    assert "dualconv/kernels/__init__.py" in launch["files"]
    assert step["launches"] > launch["launches"] > 0  # the GEMMs and ufuncs launch too
    assert {"im2col", "col2im", "max_pool_forward", "max_pool_backward",
            "softmax_cross_entropy"} <= set(launch["kernels"])
    assert sum(launch["kernels"].values()) == launch["launches"]
    bench = bench_gpu_host_cost.GpuHostCost()
    measured = {"step": step, "launch": launch}
    assert bench.track_own_python_per_fit_step(measured) == step["seconds"] * 1e6
    assert bench.track_own_python_per_custom_launch(measured) == launch["seconds"] * 1e6


def test_gpu_host_cost_eviction_run_and_its_asv_figure():
    """--evict-mb: no-op kernels that each copy some megabytes still count every launch;
    the asv class reads the per-step figure of the run with the stand-in's kernels."""
    from benchmarks import bench_gpu_host_cost, gpu_host_cost
    quiet = gpu_host_cost.fit_step_cost("sgd-momentum", batch=8, steps=4, no_op=True)
    evicted = gpu_host_cost.fit_step_cost("sgd-momentum", batch=8, steps=4, no_op=True, evict_mb=0.25)
    assert evicted["launches"] == quiet["launches"] > 0
    measured = {"step_kernels_run": evicted}
    assert bench_gpu_host_cost.GpuHostCost().track_own_python_per_fit_step_kernels_on_this_cpu(measured) \
        == evicted["seconds"] * 1e6


def test_gpu_host_cost_with_no_device_work_on_this_cpu():
    """off_host: the stand-in's ufuncs, products and reductions made no-ops too still count
    every launch, leave the stand-in as it was, and the fit ends without a false divergence;
    the asv class reads that figure."""
    from benchmarks import bench_gpu_host_cost, gpu_host_cost
    from dualconv.testing.fake_cupy import _device
    before = (_device.new, _device.launch)
    quiet = gpu_host_cost.fit_step_cost("sgd-momentum", batch=8, steps=4, no_op=True)
    off_host = gpu_host_cost.fit_step_cost("sgd-momentum", batch=8, steps=4, no_op=True, off_host=True)
    assert off_host["launches"] == quiet["launches"] > 0
    assert (_device.new, _device.launch) == before
    measured = {"step_off_host": off_host}
    assert bench_gpu_host_cost.GpuHostCost().track_own_python_per_fit_step_off_host(measured) \
        == off_host["seconds"] * 1e6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the engine's worker processes need Linux (fork)")
def test_engine_timeline_lines_up_the_callers_and_the_workers_events():
    """benchmarks/engine_timeline.py on a few LeNet steps: both processes' events, each
    step's in the order they happen (a share's end after its start); every function it
    wrapped is put back."""
    from benchmarks import engine_timeline
    from dualconv.engine import passes, workers
    originals = (workers.Worker.start, workers.pack, passes._forward_kept)
    rows = engine_timeline.timeline("lenet", batch=64, steps=4, warmup=2)
    assert (workers.Worker.start, workers.pack, passes._forward_kept) == originals
    names = [name for name, _, _ in rows]
    offsets = dict((name, offset) for name, offset, _ in rows)
    assert names[0] == "C step<#1"
    for event in ("C own", "W forward", "W backward", "C loss", "C optimizer"):
        assert offsets[f"{event}>#1"] > offsets[f"{event}<#1"], event
    assert offsets["W backward<#1"] > offsets["W forward>#1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the engine's worker processes need Linux (fork)")
def test_engine_timeline_of_a_recipes_fit_has_its_shift_guard_and_schedule():
    """benchmarks/engine_timeline.py --recipe on a few steps of the fast recipe's Trainer.fit:
    the shift, train_step, the optimizer and the schedule in each step, in order, with both
    processes' shares; every function it wrapped is put back."""
    from benchmarks import engine_timeline
    from dualconv import augment, divergence
    from dualconv.engine import passes
    originals = (augment.Shift.__call__, divergence.LastFiniteState.begin_step, passes._attempt)
    rows = engine_timeline.fit_timeline("fast", steps=3, warmup=2)
    assert (augment.Shift.__call__, divergence.LastFiniteState.begin_step, passes._attempt) == originals
    offsets = dict((name, offset) for name, offset, _ in rows)
    assert rows[0] == ("C step<#1", 0.0, 3)  # every step asked for, the warm-up's left out
    for event in ("C shift", "C train_step", "C own", "W forward", "W backward", "C optimizer", "C schedule"):
        assert offsets[f"{event}>#1"] > offsets[f"{event}<#1"], event
    assert offsets["C shift>#1"] <= offsets["C train_step<#1"] < offsets["C optimizer<#1"] < offsets["C schedule<#1"]


def test_gpu_host_cost_repeats_give_the_fit_with_the_least_total(monkeypatch):
    """repeats: one profiled fit each, and the figures of the one whose total is least."""
    from benchmarks import gpu_host_cost
    totals = iter([3e-4, 1e-4, 2e-4])
    monkeypatch.setattr(gpu_host_cost, "_one_fit_cost",
                        lambda *args: {"seconds": next(totals), "files": {}, "launches": 48})
    assert gpu_host_cost.fit_step_cost(repeats=3)["seconds"] == 1e-4
    with pytest.raises(StopIteration):
        next(totals)


def test_gpu_host_cost_refuses_no_repeats():
    from benchmarks import gpu_host_cost
    with pytest.raises(ValueError, match="repeats must be 1 or more, got 0"):
        gpu_host_cost.fit_step_cost(repeats=0)


def test_the_race_shifts_pytorchs_images_as_dualconv_does():
    """fast_mnist_vs_torch.torch_shift moves each image as dualconv's Shift does (the same
    offsets give the same images), so both sides of the race train on the same batches."""
    torch = pytest.importorskip("torch")
    from benchmarks.fast_mnist_vs_torch import torch_shift
    from dualconv.augment import Shift
    x = np.random.default_rng(3).standard_normal((12, 2, 6, 5)).astype(np.float32)
    for k in (1, 2):
        shift = Shift(k)
        offsets = shift.offsets(len(x), 0, 1, 4)
        moved = torch_shift(torch.from_numpy(x), torch.from_numpy(offsets), k).numpy()
        assert np.array_equal(moved, shift.by(x, offsets))


def test_the_race_summary_is_each_sides_median_and_their_ratio():
    """fast_mnist_vs_torch.summary: the median epoch of each side's alternating runs (an odd
    count: the middle one; an even count: the mean of the middle two), and their ratio."""
    from benchmarks.fast_mnist_vs_torch import summary
    assert summary([5.0, 4.0, 9.0], [4.0, 2.0, 5.0]) == (5.0, 4.0, 1.25)
    assert summary([4.0, 6.0], [5.0, 5.0]) == (5.0, 5.0, 1.0)
