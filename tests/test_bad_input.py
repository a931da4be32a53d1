"""Every bad input raises a clear error: its message names the layer (or Trainer,
loss, backend), what it got, and what it expected."""
from __future__ import annotations

import types

import numpy as np
import pytest

import dualconv as dc
from dualconv import backend
from dualconv.models import lenet

F32 = np.float32


def zeros(*shape, dtype=F32):
    return np.zeros(shape, dtype=dtype)


@pytest.fixture(autouse=True)
def fresh_backend(monkeypatch):
    """No backend chosen yet and no DUALCONV_BACKEND: every test starts from the default."""
    monkeypatch.setattr(backend, "_global", None)
    monkeypatch.delenv("DUALCONV_BACKEND", raising=False)


# -- wrong number of dimensions -----------------------------------------------------

@pytest.mark.parametrize("layer, x, pattern", [
    (lambda: dc.Conv2D(1, 2, 3), zeros(1, 5, 5), r"Conv2D: expected a 4-D input .*got shape \(1, 5, 5\)"),
    (lambda: dc.Conv2D(None, 2, 3), zeros(2, 1, 1, 5, 5), r"Conv2D: expected a 4-D input .*\(2, 1, 1, 5, 5\)"),
    (lambda: dc.MaxPool2D(2), zeros(1, 4, 4), r"MaxPool2D: expected a 4-D input .*got shape \(1, 4, 4\)"),
    (lambda: dc.AvgPool2D(2), zeros(4, 4), r"AvgPool2D: expected a 4-D input .*got shape \(4, 4\)"),
    (lambda: dc.Dense(4, 2), zeros(1, 2, 2), r"Dense: expected a 2-D input .*Flatten.*got shape \(1, 2, 2\)"),
    (lambda: dc.Dense(None, 2), zeros(4), r"Dense: expected a 2-D input .*got shape \(4,\)"),
    (lambda: dc.Softmax(), zeros(1, 2, 3), r"Softmax: expected a 2-D input .*got shape \(1, 2, 3\)"),
    (lambda: dc.Flatten(), zeros(5), r"Flatten: expected .*got shape \(5,\)"),
], ids=["conv-3d", "conv-5d", "maxpool", "avgpool", "dense-3d", "dense-1d", "softmax", "flatten"])
def test_wrong_ndim(layer, x, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        layer().forward(x)


def test_wrong_ndim_leaves_a_lazy_layer_unbuilt() -> None:
    layer = dc.Conv2D(None, 2, 3)
    with pytest.raises(ValueError):
        layer.forward(zeros(1, 5, 5))
    assert not layer.built
    assert layer.forward(zeros(1, 3, 5, 5)).shape == (1, 2, 3, 3)


# -- wrong channel / feature count ----------------------------------------------------

def test_conv_channel_count() -> None:
    with pytest.raises(ValueError, match=r"Conv2D: expected 3 input channels, got 2"):
        dc.Conv2D(3, 2, 3).forward(zeros(1, 2, 5, 5))


def test_lazy_conv_channel_count_is_fixed_by_the_first_forward() -> None:
    layer = dc.Conv2D(None, 2, 3)
    layer.forward(zeros(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"Conv2D: expected 4 input channels, got 1"):
        layer.forward(zeros(1, 1, 5, 5))


def test_dense_feature_count() -> None:
    with pytest.raises(ValueError, match=r"Dense: expected 4 input features, got 5"):
        dc.Dense(4, 2).forward(zeros(3, 5))


def test_model_with_wrong_input_size_names_the_layer() -> None:
    model = lenet(seed=0)
    model.forward(zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"Dense: expected 400 input features, got 576"):
        model.forward(zeros(1, 1, 32, 32))


# -- windows that do not fit ----------------------------------------------------------

@pytest.mark.parametrize("make, shape, pattern", [
    (lambda: dc.Conv2D(1, 2, 5), (1, 1, 4, 4), r"Conv2D: kernel \(5, 5\).*larger than the padded input \(4, 4\)"),
    (lambda: dc.Conv2D(1, 2, (2, 6), padding=1), (1, 1, 3, 3),
     r"Conv2D: kernel \(2, 6\).*larger than the padded input \(5, 5\)"),
    (lambda: dc.Conv2D(1, 2, 3, dilation=3), (1, 1, 6, 6), r"Conv2D: .*dilated span \(7, 7\).*\(6, 6\)"),
    (lambda: dc.Conv2D(1, 2, 2, stride=3, dilation=(1, 5)), (1, 1, 4, 4), r"Conv2D: .*dilated span \(2, 6\)"),
    (lambda: dc.MaxPool2D(3), (1, 1, 2, 2), r"MaxPool2D: kernel \(3, 3\) is larger than the padded input \(2, 2\)"),
    (lambda: dc.AvgPool2D((2, 5), padding=(0, 1)), (1, 1, 4, 2),
     r"AvgPool2D: kernel \(2, 5\) is larger than the padded input \(4, 4\)"),
], ids=["conv", "conv-padded", "dilation", "stride-dilation", "maxpool", "avgpool"])
def test_kernel_larger_than_padded_input(make, shape, pattern) -> None:
    """The output size floor((H + 2p - span) / s) + 1 is below 1 exactly when the span exceeds H + 2p."""
    with pytest.raises(ValueError, match=pattern):
        make().forward(zeros(*shape))


def test_model_shape_error_at_build_names_the_layer() -> None:
    """LeNet on 8x8 images: the second conv (5x5) meets a 4x4 map after the first pool."""
    with pytest.raises(ValueError, match=r"Conv2D: kernel \(5, 5\).*\(4, 4\)"):
        lenet(seed=0).forward(zeros(2, 1, 8, 8))


# -- constructor arguments -----------------------------------------------------------

@pytest.mark.parametrize("make, error, pattern", [
    (lambda: dc.Conv2D(1, 2, -3), ValueError, r"Conv2D: kernel_size must be >= 1, got \(-3, -3\)"),
    (lambda: dc.Conv2D(1, 2, (3, 0)), ValueError, r"Conv2D: kernel_size must be >= 1, got \(3, 0\)"),
    (lambda: dc.Conv2D(1, 2, 3, stride=0), ValueError, r"Conv2D: stride must be >= 1"),
    (lambda: dc.Conv2D(1, 2, 3, dilation=0), ValueError, r"Conv2D: dilation must be >= 1"),
    (lambda: dc.Conv2D(1, 2, 3, padding=-1), ValueError, r"Conv2D: padding must be >= 0, got -1"),
    (lambda: dc.Conv2D(1, 0, 3), ValueError, r"Conv2D: out_channels must be a positive int, got 0"),
    (lambda: dc.Conv2D(-1, 2, 3), ValueError, r"Conv2D: in_channels must be .*got -1"),
    (lambda: dc.Conv2D(1, 2, 2.5), TypeError, r"Conv2D kernel_size must be an int or a pair"),
    (lambda: dc.Conv2D(1, 2, (1, 2, 3)), ValueError, r"Conv2D kernel_size must be an int or a pair"),
    (lambda: dc.Conv2D(1, 2, 3, stride=2, padding="same"), ValueError,
     r"Conv2D: padding='same' needs stride 1, got stride \(2, 2\)"),
    (lambda: dc.Conv2D(1, 2, 4, padding="same"), ValueError, r"Conv2D: padding='same' needs an odd"),
    (lambda: dc.Conv2D(1, 2, 3, padding="full"), ValueError, r"Conv2D: padding must be .*'same'.*got 'full'"),
    (lambda: dc.Dense(4, 0), ValueError, r"Dense: out_features must be a positive int, got 0"),
    (lambda: dc.Dense(0, 2), ValueError, r"Dense: in_features must be .*got 0"),
    (lambda: dc.Dense(4, 2, weight_init="zeros"), ValueError, r"unknown initializer 'zeros'"),
    (lambda: dc.MaxPool2D(-2), ValueError, r"MaxPool2D: kernel_size and stride must be >= 1"),
    (lambda: dc.AvgPool2D(2, stride=0), ValueError, r"AvgPool2D: kernel_size and stride must be >= 1"),
    (lambda: dc.MaxPool2D(2, padding=2), ValueError, r"MaxPool2D: padding must be between 0 and half"),
    (lambda: dc.Dropout(1.0), ValueError, r"Dropout: p .*must be in \[0, 1\), got 1.0"),
    (lambda: dc.Dropout(-0.1), ValueError, r"Dropout: p .*got -0.1"),
    (lambda: dc.HardTanh(1.0, -1.0), ValueError, r"HardTanh: min_val must be below max_val"),
    (lambda: dc.Sequential([dc.ReLU()], dtype=np.int32), TypeError, r"Sequential: dtype must be float"),
])
def test_bad_constructor_arguments(make, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        make()


# -- dtype -------------------------------------------------------------------------

@pytest.mark.parametrize("make, x", [
    (lambda: dc.Dense(4, 2), zeros(1, 4, dtype=np.float64)),
    (lambda: dc.Conv2D(1, 2, 3), zeros(1, 1, 4, 4, dtype=np.float64)),
    (lambda: dc.Conv2D(1, 2, 3).astype(np.float64), zeros(1, 1, 4, 4)),
], ids=["dense-f64-into-f32", "conv-f64-into-f32", "conv-f32-into-f64"])
def test_dtype_mismatch(make, x) -> None:
    layer = make()
    with pytest.raises(TypeError, match=rf"{layer.name}: expected {layer.dtype} input .*got {x.dtype}"):
        layer.forward(x)


def test_non_arrays_and_integer_inputs() -> None:
    with pytest.raises(TypeError, match=r"Dense: expected an array, got list"):
        dc.Dense(4, 2).forward([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(TypeError, match=r"ReLU: expected a floating-point input, got int64"):
        dc.ReLU().forward(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match=r"Sequential: expected an array input, got list"):
        dc.Sequential([dc.ReLU()]).forward([1.0])


@pytest.mark.parametrize("make", [lambda: dc.MaxPool2D(2), lambda: dc.AvgPool2D(2),
                                  lambda: dc.Conv2D(None, 2, 3)], ids=["MaxPool2D", "AvgPool2D", "Conv2D"])
@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_window_layers_take_float32_or_float64_only(make, dtype) -> None:
    """The kernels exist for float32 and float64 on both backends; anything else is refused
    by the layer, before a lazy layer would build float16 parameters."""
    layer = make()
    with pytest.raises(TypeError, match=rf"{layer.name}: input must be float32 or float64, got {np.dtype(dtype)}"):
        layer.forward(np.zeros((1, 1, 4, 4), dtype=dtype))
    assert not layer.built


# -- backward ------------------------------------------------------------------------

@pytest.mark.parametrize("make, gy", [
    (lambda: dc.Dense(4, 2), zeros(1, 2)),
    (lambda: dc.Conv2D(1, 2, 3), zeros(1, 2, 2, 2)),
    (lambda: dc.MaxPool2D(2), zeros(1, 1, 1, 1)),
    (lambda: dc.AvgPool2D(2), zeros(1, 1, 1, 1)),
    (lambda: dc.Flatten(), zeros(1, 4)),
    (lambda: dc.ReLU(), zeros(1, 4)),
    (lambda: dc.Softmax(), zeros(1, 4)),
], ids=["Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "ReLU", "Softmax"])
def test_backward_before_forward(make, gy) -> None:
    layer = make()
    with pytest.raises(RuntimeError, match=rf"{layer.name}.backward called before forward"):
        layer.backward(gy)


def test_dropout_backward_before_forward() -> None:
    """A training-mode Dropout has no mask before its first forward.

    Regression: Dropout.backward once returned gy unchanged when it had no mask,
    which meant both "eval mode" and "no forward yet".
    """
    with pytest.raises(RuntimeError, match=r"Dropout.backward called before forward"):
        dc.Dropout(0.5).backward(zeros(2, 3))


@pytest.mark.parametrize("make, x, gy, pattern", [
    (lambda: dc.Dense(4, 2), zeros(3, 4), zeros(3, 5), r"Dense.backward: expected a gradient of shape \(3, 2\).*got \(3, 5\)"),
    (lambda: dc.Conv2D(1, 2, 3), zeros(1, 1, 4, 4), zeros(1, 2, 3, 3), r"Conv2D.backward: .*\(1, 2, 2, 2\).*got \(1, 2, 3, 3\)"),
    (lambda: dc.MaxPool2D(2), zeros(1, 1, 4, 4), zeros(1, 1, 4, 4), r"MaxPool2D.backward: .*\(1, 1, 2, 2\)"),
    (lambda: dc.Tanh(), zeros(2, 2), zeros(2, 3), r"Tanh.backward: .*\(2, 2\).*got \(2, 3\)"),
], ids=["Dense", "Conv2D", "MaxPool2D", "Tanh"])
def test_backward_gradient_of_the_wrong_shape(make, x, gy, pattern) -> None:
    layer = make()
    layer.forward(x)
    with pytest.raises(ValueError, match=pattern):
        layer.backward(gy)


def test_loss_backward_before_forward() -> None:
    with pytest.raises(RuntimeError, match=r"MeanSquaredError.backward called before forward"):
        dc.MeanSquaredError().backward()


# -- losses ------------------------------------------------------------------------

@pytest.mark.parametrize("labels, pattern", [
    (np.array([0, 3]), r"SoftmaxCrossEntropy: labels must be in \[0, 3\), got values from 0 to 3"),
    (np.array([-1, 2]), r"SoftmaxCrossEntropy: labels must be in \[0, 3\), got values from -1 to 2"),
    (np.array([0, 1, 2]), r"SoftmaxCrossEntropy: got 3 labels for 2 predictions"),
    (np.zeros((2, 4)), r"SoftmaxCrossEntropy: predictions have shape \(2, 3\) but targets have shape \(2, 4\)"),
])
def test_softmax_cross_entropy_bad_labels(labels, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        dc.SoftmaxCrossEntropy().forward(zeros(2, 3), labels)


def test_softmax_cross_entropy_float_labels_and_bad_logits() -> None:
    with pytest.raises(TypeError, match=r"SoftmaxCrossEntropy: 1-D targets must be integer .*got float64"):
        dc.SoftmaxCrossEntropy().forward(zeros(2, 3), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy: expected logits of shape \(N, classes\), got \(2, 3, 1\)"):
        dc.SoftmaxCrossEntropy().forward(zeros(2, 3, 1), np.array([0, 1]))


@pytest.mark.parametrize("loss", [dc.MeanSquaredError(), dc.BinaryCrossEntropy()], ids=["mse", "bce"])
def test_elementwise_losses_need_matching_shapes(loss) -> None:
    with pytest.raises(ValueError, match=rf"{loss.name}: predictions have shape \(4, 1\) but targets have shape \(4,\)"):
        loss.forward(zeros(4, 1), zeros(4))


# -- Trainer ---------------------------------------------------------------------------

def small_trainer(loss=None, lr=0.1) -> dc.Trainer:
    model = dc.Sequential([dc.Flatten(), dc.Dense(None, 3)], seed=0)
    return dc.Trainer(model, loss or dc.SoftmaxCrossEntropy(), dc.SGD(model.parameters(), lr=lr),
                      progress=False)


X = np.random.default_rng(0).standard_normal((12, 1, 2, 2)).astype(F32)
Y = np.arange(12) % 3


@pytest.mark.parametrize("y, pattern", [
    (np.arange(12) % 4, r"Trainer.fit: labels must be in \[0, 3\), got values from 0 to 3"),
    (Y - 1, r"Trainer.fit: labels must be in \[0, 3\), got values from -1 to 1"),
    (Y[:10], r"Trainer.fit: X has 12 samples but y has 10; they must match"),
])
def test_fit_bad_labels(y, pattern) -> None:
    trainer = small_trainer()
    trainer.model.build(X.shape)
    before = trainer.model.state_dict()
    with pytest.raises(ValueError, match=pattern):
        trainer.fit(X, y, epochs=1, batch_size=4)
    for k, v in trainer.model.state_dict().items():  # checked before any step
        np.testing.assert_array_equal(v, before[k])


def test_fit_float_labels_and_empty_data() -> None:
    with pytest.raises(TypeError, match=r"Trainer.fit: 1-D labels must be integers, got float64"):
        small_trainer().fit(X, Y.astype(np.float64))
    with pytest.raises(ValueError, match=r"Trainer.fit: got an empty dataset"):
        small_trainer().fit(X[:0], Y[:0])
    with pytest.raises(ValueError, match=r"Trainer.fit: batch_size must be >= 1, got 0"):
        small_trainer().fit(X, Y, batch_size=0)


def test_fit_validation_data_of_different_lengths() -> None:
    with pytest.raises(ValueError, match=r"Trainer.fit\(validation_data\): X has 12 samples but y has 5"):
        small_trainer().fit(X, Y, validation_data=(X, Y[:5]))


@pytest.mark.parametrize("y, pattern", [
    (Y[:7], r"Trainer.evaluate: X has 12 samples but y has 7; they must match"),
    (Y + 2, r"Trainer.evaluate: labels must be in \[0, 3\), got values from 2 to 4"),
])
def test_evaluate_bad_labels(y, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        small_trainer().evaluate(X, y)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fit_on_data_with_nan_reports_a_non_finite_loss() -> None:
    Xn = X.copy()
    Xn[5, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"Trainer.fit: the loss became nan at epoch 1, step 2 \(samples 4-7 .*weights were kept"):
        small_trainer().fit(Xn, Y, epochs=1, batch_size=4, shuffle=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fit_with_a_huge_learning_rate_reports_divergence() -> None:
    trainer = small_trainer(loss=dc.MeanSquaredError(), lr=1e12)
    with pytest.raises(ValueError, match=r"Trainer.fit: the (loss became (nan|inf)|update made the weights non-finite).* at epoch \d, step \d+ .*weights were kept"):
        trainer.fit(X, np.eye(3, dtype=F32)[Y], epochs=5, batch_size=4)


def test_trainer_log_every_must_be_positive() -> None:
    model = dc.Sequential([dc.Dense(None, 2)])
    with pytest.raises(ValueError, match=r"Trainer: log_every must be >= 1, got 0"):
        dc.Trainer(model, dc.MeanSquaredError(), dc.SGD(model.parameters()), log_every=0)


# -- backends ----------------------------------------------------------------------

def test_unknown_backend_name() -> None:
    for call in (dc.set_backend, lambda n: dc.use_backend(n).__enter__()):
        with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cupy', 'auto'\), got 'tpu'"):
            call("tpu")


def test_cupy_backend_without_cupy(monkeypatch) -> None:
    monkeypatch.setattr(backend, "_import_cupy", lambda: None)
    with pytest.raises(RuntimeError, match=r"backend 'cupy' requested: CuPy is not installed"):
        dc.set_backend("cupy")
    assert dc.get_backend() == "numpy"  # the failed choice was not kept


class _NoDevice(RuntimeError):
    pass


def fake_cupy(count=None, error=None) -> types.SimpleNamespace:
    def get_device_count():
        if error is not None:
            raise error
        return count
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count)))


@pytest.mark.parametrize("cupy, detail", [
    (fake_cupy(error=_NoDevice("cudaErrorNoDevice: no CUDA-capable device is detected")), "cudaErrorNoDevice"),
    (fake_cupy(count=0), "no CUDA device found"),
], ids=["raises", "zero-devices"])
def test_cupy_backend_without_gpu(monkeypatch, cupy, detail) -> None:
    monkeypatch.setattr(backend, "_import_cupy", lambda: cupy)
    with pytest.raises(RuntimeError, match=r"backend 'cupy' requested: CuPy is installed but no GPU is usable") as info:
        dc.set_backend("cupy")
    assert detail in str(info.value)
    assert "not installed" not in str(info.value)


def test_moving_a_model_to_cupy_without_cupy(monkeypatch) -> None:
    monkeypatch.setattr(backend, "_import_cupy", lambda: None)
    model = dc.Sequential([dc.Dense(3, 2)], seed=0)
    with pytest.raises(RuntimeError, match=r"CuPy is not installed"):
        model.to("cupy")
    assert model.backend == "numpy"
    assert isinstance(model.layers[0].params["weight"], np.ndarray)
