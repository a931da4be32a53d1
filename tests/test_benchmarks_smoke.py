"""Smoke tests of the asv suite in benchmarks/: it imports, sets up and runs one call per kind.

No speed is asserted (timings depend on the machine); these only keep the suite
from rotting between `asv run`s. Small sizes only; the torch peers are tried
when PyTorch is installed, the GPU backends are checked to skip without a GPU.
"""
from __future__ import annotations

import inspect
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import dualconv as dc  # noqa: E402
from benchmarks import bench_kernels, bench_layers, bench_training, common, results_table  # noqa: E402

BENCH_MODULES = [bench_kernels, bench_layers, bench_training]
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


@pytest.mark.parametrize("backend", _backends())
def test_kernel_time_classes_run(backend):
    for cls in (bench_kernels.Im2col, bench_kernels.MaxPoolBackward):
        bench = cls()
        bench.setup(backend, "lenet2")
        getattr(bench, f"time_{cls.kernel}")(backend, "lenet2")


@pytest.mark.parametrize("backend", _backends())
def test_conv_layer_benchmark_runs(backend):
    bench = bench_layers.Conv2D()
    bench.setup(backend, "lenet2")
    bench.time_forward(backend, "lenet2")
    bench.time_backward(backend, "lenet2")


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("model", bench_training.MODELS)
def test_train_step_benchmark_runs(model, backend):
    bench = bench_training.TrainStep()
    bench.setup(model, backend, 64)
    bench.time_train_step(model, backend, 64)
    bench.peakmem_train_step(model, backend, 64)
    rate = common.images_per_second(bench.step, bench.sync, 64, min_steps=1, min_seconds=0.0)
    assert rate > 0


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
