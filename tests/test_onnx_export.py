"""dualconv.onnx.export and ``dualconv export``: valid graphs, ONNX Runtime agreeing with
``model.predict`` within the error bound, the same bytes from either backend, clear refusals.

ONNX Runtime and dualconv each compute the forward with their own sums (and ONNX Runtime
with its own logistic and its Conv+BatchNormalization folding), each within
``forward_error_bound(model, x, onnxruntime=True)`` of the exact float64 forward
(tests/error_bounds.py), so they differ by at most twice that. The largest
|difference| / (2 * bound) seen is printed (``pytest -s``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dualconv as dc
from dualconv import cli
from dualconv.onnx import INPUT_NAME, OUTPUT_NAME, export
from error_bounds import assert_within, forward_error_bound

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = {"lenet": (1, 28, 28), "lenet_bn": (1, 28, 28), "weidman": (1, 8, 8), "mlp": (1, 28, 28)}
CONFIGS = 200


def _runtime(path: Path) -> object:
    """ONNX Runtime's CPU provider loaded with the file at path, on one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _randomize(model: dc.Sequential, rng: np.random.Generator) -> None:
    """Biases and BatchNorm statistics drawn at random (fresh ones are 0 and 1: no test of them)."""
    state = model.state_dict()
    for name, value in state.items():
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.25, 2.0, value.shape)
        elif name.endswith(("bias", "running_mean")):
            state[name] = rng.normal(0.0, 0.5, value.shape)
        elif ".BatchNorm" in name:  # its weight
            state[name] = rng.normal(1.0, 0.5, value.shape)
    model.load_state_dict(state)


def _runtime_ratio(model: dc.Sequential, x: np.ndarray, path: Path, what: str) -> float:
    """Export, run in ONNX Runtime, assert |runtime - predict| <= 2 * bound; returns the worst
    |difference| / (2 * bound)."""
    export(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    got = _runtime(path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    expected = model.predict(x)
    bound = 2 * forward_error_bound(model, x, onnxruntime=True)
    assert got.dtype == expected.dtype == model.dtype
    assert_within(got, expected, bound, f"{what}: ")
    return float(np.max(np.abs(got.astype(np.float64) - expected) / bound))


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_models_pass_the_checker_and_agree_with_predict(name, tmp_path):
    rng = np.random.default_rng(3)
    model = getattr(dc.models, name)(seed=1)
    model.build((1, *BUNDLED[name]))
    _randomize(model, rng)
    model.train()  # the export has eval semantics whatever the mode
    x = rng.random((5, *BUNDLED[name]), dtype=np.float32)
    ratio = _runtime_ratio(model, x, tmp_path / f"{name}.onnx", name)
    assert model.training
    proto = onnx.load(str(tmp_path / f"{name}.onnx"))
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and proto.graph.output[0].name == OUTPUT_NAME
    assert [n.name for n in proto.graph.node] == [f"{i}.{la.name}" for i, la in enumerate(model.layers)]
    one = _runtime(tmp_path / f"{name}.onnx").run(None, {INPUT_NAME: x[:1]})[0]
    assert one.shape == (1, 10)
    print(f"\n{name}: largest |ONNX Runtime - predict| / (2 * bound) = {ratio:.3g}")


def _draw_model(rng: np.random.Generator) -> tuple[dc.Sequential, tuple[int, ...], set[str]]:
    """Conv2D -> [BatchNorm2D] -> activation -> max or avg pool -> Flatten -> [Dropout] -> Dense
    -> [Softmax], with random geometry; returns it, its input shape and the features drawn."""
    while True:
        features = set()
        C, H, W = int(rng.integers(1, 4)), int(rng.integers(4, 13)), int(rng.integers(4, 13))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        if rng.random() < 0.25:
            kh, kw = kh | 1, kw | 1  # an odd kernel, as "same" needs
            stride, padding = (1, 1), "same"
        else:
            stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        features |= {"same"} if padding == "same" else {"padding"} if max(padding) else set()
        features |= {"rectangular"} if kh != kw else set()
        features |= {"stride"} if max(stride) > 1 else set()
        features |= {"dilation"} if max(dilation) > 1 else set()
        layers = [dc.Conv2D(None, int(rng.integers(1, 5)), (kh, kw), stride, padding, dilation)]
        if rng.random() < 0.25:
            layers.append(dc.BatchNorm2D())
        activations = [dc.ReLU(), dc.LeakyReLU(float(rng.uniform(0.01, 0.3))), dc.Tanh(), dc.Sigmoid(),
                       dc.HardTanh(-0.5, 0.75), dc.Identity()]
        layers.append(activations[int(rng.integers(len(activations)))])
        pool_k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pool_pad = (int(rng.integers(0, pool_k[0] // 2 + 1)), int(rng.integers(0, pool_k[1] // 2 + 1)))
        pool = dc.MaxPool2D if rng.random() < 0.5 else dc.AvgPool2D
        layers.append(pool(pool_k, (int(rng.integers(1, 4)), int(rng.integers(1, 4))), pool_pad))
        features |= {f"{pool.__name__} padding"} if max(pool_pad) else set()
        layers.append(dc.Flatten())
        if rng.random() < 0.2:
            layers.append(dc.Dropout(0.3))
        layers.append(dc.Dense(None, int(rng.integers(2, 6))))
        if rng.random() < 0.25:
            layers.append(dc.Softmax())
        model = dc.Sequential(layers, seed=int(rng.integers(2**31)))
        try:
            model.build((1, C, H, W))
        except ValueError:  # the window does not fit this input: draw again
            continue
        return model, (C, H, W), features | {type(la).__name__ for la in layers}


def test_random_convolution_and_pooling_configurations_agree_with_predict(tmp_path):
    rng = np.random.default_rng(2028)
    worst, worst_at, seen = 0.0, "", set()
    for i in range(CONFIGS):
        model, shape, features = _draw_model(rng)
        _randomize(model, rng)
        x = rng.standard_normal((2, *shape)).astype(np.float32)
        ratio = _runtime_ratio(model, x, tmp_path / "config.onnx", f"configuration {i} {model!r}")
        seen |= features
        if ratio > worst:
            worst, worst_at = ratio, f"configuration {i}: {model!r}"
    expected = {"same", "padding", "rectangular", "stride", "dilation", "MaxPool2D padding", "AvgPool2D padding",
                "BatchNorm2D", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "HardTanh", "Identity", "Dropout", "Softmax"}
    assert expected <= seen, f"the draws never made {sorted(expected - seen)}"
    print(f"\n{CONFIGS} configurations: largest |ONNX Runtime - predict| / (2 * bound) = {worst:.3g} at {worst_at}")


def test_float64_models_export_float64(tmp_path):
    """ONNX Runtime's CPU provider has float64 Gemm, activations and BatchNormalization but no
    float64 Conv or AveragePool: a float64 MLP runs there, a float64 CNN is a valid float64 graph."""
    model = dc.models.lenet_bn(seed=0, dtype=np.float64)
    proto = export(model, tmp_path / "lenet64.onnx", input_shape=(1, 1, 28, 28))
    onnx.checker.check_model(proto, full_check=True)
    double = onnx.TensorProto.DOUBLE
    assert proto.graph.input[0].type.tensor_type.elem_type == double
    assert {t.data_type for t in proto.graph.initializer} == {double}
    mlp = dc.Sequential([dc.Flatten(), dc.Dense(None, 16), dc.Tanh(), dc.BatchNorm1D(), dc.Dense(None, 8),
                         dc.Sigmoid(), dc.Dense(None, 4), dc.Softmax()], seed=0, dtype=np.float64)
    mlp.build((1, 3, 4, 4))
    x = np.random.default_rng(0).standard_normal((6, 3, 4, 4))
    _randomize(mlp, np.random.default_rng(1))
    mlp.layers[3].eps = float(np.float32(mlp.layers[3].eps))  # ONNX keeps epsilon as a float32
    ratio = _runtime_ratio(mlp, x, tmp_path / "mlp64.onnx", "float64 MLP")
    print(f"\nfloat64 MLP: largest |ONNX Runtime - predict| / (2 * bound) = {ratio:.3g}")


def test_opsets_input_shapes_and_lazy_models(tmp_path):
    model = dc.models.weidman(seed=0)
    with pytest.raises(ValueError, match="no input shape yet; pass input_shape"):
        export(model, tmp_path / "a.onnx")
    export(model, tmp_path / "a.onnx", input_shape=(1, 1, 8, 8), opset=13)  # builds the model
    assert model.input_shape == (None, 1, 8, 8)
    assert onnx.load(str(tmp_path / "a.onnx")).opset_import[0].version == 13
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    assert_within(_runtime(tmp_path / "a.onnx").run(None, {INPUT_NAME: x})[0], model.predict(x),
                  2 * forward_error_bound(model, x, onnxruntime=True))
    for bad in (12, 10_000, 17.0, True):
        with pytest.raises(ValueError, match="opset must be an int from 13"):
            export(model, tmp_path / "b.onnx", opset=bad)
    with pytest.raises(ValueError, match="Dense: expected 2048 input features"):
        export(model, tmp_path / "b.onnx", input_shape=(1, 1, 9, 8))
    assert not (tmp_path / "b.onnx").exists()


class Doubling(dc.Layer):
    """A user's layer: y = 2x."""

    couples_samples = False

    def _forward(self, x):
        return x * 2


class MyReLU(dc.ReLU):
    """A subclass of a built-in layer may compute otherwise: no ONNX form either."""


@pytest.mark.parametrize("layer, name", [(Doubling(), "Doubling"), (MyReLU(), "MyReLU")])
def test_a_layer_without_an_onnx_form_is_refused_by_name_and_index(layer, name, tmp_path):
    model = dc.Sequential([dc.Flatten(), dc.Dense(None, 4), layer, dc.Dense(None, 2)], seed=0)
    model.build((1, 6))
    with pytest.raises(ValueError, match=re.escape(f"layer 2 ({name}, {__name__}.{name}) has no ONNX form; "
                                                   "the layers that export are AvgPool2D, BatchNorm1D, ")):
        export(model, tmp_path / "user.onnx")
    assert not (tmp_path / "user.onnx").exists()


def test_a_model_on_the_emulated_cupy_exports_the_same_bytes(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("the emulated CuPy needs g++")
    from dualconv.testing import emulated_cupy

    with emulated_cupy(), dc.use_backend("cupy"):
        model = dc.models.lenet_bn(seed=4)
        model.build((1, 1, 28, 28))
        _randomize(model, np.random.default_rng(5))
        assert model.backend == "cupy" and type(model.layers[0].params["weight"]).__module__ != "numpy"
        export(model, tmp_path / "cupy.onnx")
        export(model.to("numpy"), tmp_path / "numpy.onnx")
    assert (tmp_path / "cupy.onnx").read_bytes() == (tmp_path / "numpy.onnx").read_bytes()


# -- the command line --------------------------------------------------------------------


def _dualconv(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "dualconv", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _one_line_error(done: subprocess.CompletedProcess | tuple[int, str], pattern: str) -> None:
    code, stderr = (done.returncode, done.stderr) if not isinstance(done, tuple) else done
    assert code == 1 and "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dualconv export: error: "), stderr
    assert pattern in lines[0], lines[0]


def test_the_export_command_writes_a_file_onnx_runtime_runs(tmp_path):
    model = dc.models.weidman(seed=0)
    model.build((1, 1, 8, 8))
    _randomize(model, np.random.default_rng(6))
    model.save(tmp_path / "model.npz")
    done = _dualconv("export", "--weights", "model.npz", "--out", "digits.onnx", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("wrote digits.onnx: ONNX opset 17, float32, input 'input' ['batch', 1, 8, 8]")
    x = np.random.default_rng(7).random((4, 1, 8, 8), dtype=np.float32)
    got = _runtime(tmp_path / "digits.onnx").run(None, {INPUT_NAME: x})[0]
    assert_within(got, model.predict(x), 2 * forward_error_bound(model, x, onnxruntime=True))
    _one_line_error(_dualconv("export", "--weights", "missing.npz", cwd=tmp_path), "no weights file missing.npz")


def test_export_command_errors_are_one_line(tmp_path, capsys, monkeypatch):
    def run(*args: object) -> tuple[int, str]:
        code = cli.main([str(a) for a in args])
        return code, capsys.readouterr().err

    (tmp_path / "junk.npz").write_bytes(b"not a model")
    _one_line_error(run("export", "--weights", tmp_path / "junk.npz"), "is not a dualconv model file")
    model = dc.models.mlp(seed=0)
    model.build((1, 1, 8, 8))
    model.save(tmp_path / "model.npz")
    _one_line_error(run("export", "--weights", tmp_path / "model.npz", "--out", tmp_path),
                    "is a directory; give a file name")
    _one_line_error(run("export", "--weights", tmp_path / "model.npz", "--input-shape", "1,9,9"),
                    "Dense: expected 64 input features, got 81")
    _one_line_error(run("export", "--weights", tmp_path / "model.npz", "--opset", "12"), "opset must be an int")
    assert run("export", "--weights", tmp_path / "model.npz") == (0, "")  # default --out: model.onnx
    assert (tmp_path / "model.onnx").is_file()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    _one_line_error(run("export", "--weights", tmp_path / "model.npz"), "pip install 'dualconv[onnx]'")
