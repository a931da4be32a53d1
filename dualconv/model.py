"""Sequential: a stack of layers, run forward in order and backward in reverse."""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable

import numpy as np

from .arguments import check_batch_size
from .backend import asnumpy, backend_of, get_array_module, get_backend, to_backend
from .inference_bands import BandedInference
from .layers import Dropout, Layer, MaxPool2D, ReLU, Softmax
from .layers.activations import softmax
from .optim import Parameter, ParameterView
from .parts import in_groups, predict_batch_size
from .threads import num_threads, run_in_parallel, worker_kind


PREDICT_BATCH_SIZE = {"numpy": 128, "cupy": 256}
"""predict's default batch per backend; on the CPU the most, for a built model
parts.predict_batch_size picks a power of two up to it by what a sample makes.
On the CPU the batches are shared out over the cores (threads.run_in_parallel),
each taking a run of them. A GPU wants large batches."""


class Sequential:
    """model = Sequential([Conv2D(None, 6, 5, padding=2), ReLU(), ...], seed=0).

    ``seed`` makes the initial weights reproducible: every layer draws from
    one generator seeded with it, in layer order. ``dtype`` is float32 by
    default; float64 runs end to end.
    """

    def __init__(self, layers: Iterable[Layer], seed: int | None = None, dtype: Any = np.float32) -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Layer")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"Sequential: dtype must be float32 or float64, got {self.dtype}")
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.backend = get_backend()
        for layer in self.layers:
            layer.reset_parameters(self._rng)
            layer.astype(self.dtype).to(self.backend)
        self._run_order: list[Layer] = []  # the layers as the last forward ran them
        self.input_shape: tuple[int, ...] | None = None
        self._checked_input: tuple[tuple[int, ...], np.dtype] | None = None  # last input shape checked

    # -- shapes ---------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Create every lazy parameter for inputs of ``input_shape`` (batch dim included).

        Atomic: the whole chain of shapes is checked first (``check_shapes``), so
        a shape any layer rejects leaves the model exactly as it was.
        """
        shapes = self.check_shapes(input_shape)
        for layer, shape in zip(self.layers, shapes):
            layer._backend = self.backend
            layer.build(shape, rng=self._rng, dtype=self.dtype)
        self.input_shape = (None, *tuple(input_shape)[1:])
        self._checked_input = (tuple(input_shape)[1:], self.dtype)
        return shapes[-1]

    @property
    def needs_build(self) -> bool:
        """True until the model knows its input shape and every lazy layer has its parameters."""
        return self.input_shape is None or any(layer.needs_build for layer in self.layers)

    def check_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Every layer's input shape for a model input of ``input_shape``, then the output shape.

        Each layer makes the checks its forward makes (number of dimensions,
        channels, window sizes); the first one that fails raises its error, naming
        the layer. Nothing is built or changed.
        """
        shapes = [tuple(input_shape)]
        for layer in self.layers:
            shapes.append(tuple(layer.check_shape(shapes[-1], self.dtype)))
        return shapes

    # -- compute --------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """x: (N, ...) -> the last layer's output. Casts x to the model's dtype and backend."""
        x = self._prepared(x)
        for layer in self._run_order:
            x = layer.forward(x)
        return x

    __call__ = forward

    def _prepared(self, x: Any) -> Any:
        """x checked (shapes), the model built, x on the model's backend and in its dtype;
        sets the run order of the forward about to run."""
        if not hasattr(x, "shape"):
            raise TypeError(f"Sequential: expected an array input, got {type(x).__name__}")
        if self.needs_build:
            self.build(tuple(x.shape))
        elif self._checked_input != (tuple(x.shape)[1:], self.dtype):
            self.check_shapes(tuple(x.shape))  # a new shape: reject it before any layer runs
            self._checked_input = (tuple(x.shape)[1:], self.dtype)
        x = to_backend(x, self.backend)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        self._run_order = run_order(self.layers)
        return x

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        """Back-propagate gy, the loss gradient for the output; fills every layer's grads.

        Returns gx, the gradient for the input, or None with ``input_grad=False``
        (training needs only the parameter gradients, so the first layer skips gx).
        The layers run in the reverse of the last forward's order (run_order).
        """
        order = self._run_order or self.layers
        for layer in reversed(order[1:]):
            gy = layer.backward(gy)
        return order[0].backward(gy, input_grad=input_grad)

    def replica(self) -> "Sequential":
        """A twin that shares this model's parameters and buffers but keeps its own layer
        caches and gradients, to compute another part of a batch on another core. It
        builds nothing (it has no generator to draw parameters from)."""
        twin = copy.copy(self)
        twin.layers = [layer.replica() for layer in self.layers]
        twin._run_order = []
        twin._rng = None
        return twin

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """Outputs for x in eval mode, computed in batches; returns them on x's backend.

        ``batch_size`` defaults to PREDICT_BATCH_SIZE for the model's backend (on the CPU,
        for a built model, a power of two up to it: parts.predict_batch_size).
        """
        batch_size = self._batch_size("predict", batch_size)
        if hasattr(x, "shape") and (len(x.shape) == 0 or x.shape[0] == 0):
            raise ValueError(f"Sequential.predict: expected one sample or more, got an array of shape {tuple(x.shape)}")
        was_training = self.training
        self.eval()
        try:
            starts = list(range(0, len(x), batch_size))
            threads = max(1, min(num_threads(), len(starts))) if self.backend == "numpy" else 1
            if threads > 1 and self.needs_build:
                self.forward(x[:1])  # builds the model (and checks x) before replicas share it
            models = [self] + [self.replica() for _ in range(threads - 1)]
            # each core takes a run of consecutive batches: the outputs are the same
            # numbers, in the same order, as one core's
            # bands make many short NumPy calls: worth it in a process of its own, not on
            # threads that share the GIL (weidman at batch 64 on two threads: 46k -> 29k images/s)
            banded = threads == 1 or worker_kind() == "processes"
            calls = [(forward_batches, (model, x[group[0]:group[-1] + batch_size], batch_size, banded))
                     for model, group in zip(models, in_groups(starts, threads))]
            outs = [out for group in run_in_parallel(calls) for out in group]
        finally:
            if was_training:
                self.train()
        outs = [to_backend(o, backend_of(x)) for o in outs]
        return get_array_module(outs[0]).concatenate(outs)

    def predict_proba(self, x: Any, batch_size: int | None = None) -> Any:
        """Class probabilities (N, classes): the softmax of predict's logits, on x's backend.

        A model that already ends in a Softmax layer returns its outputs unchanged.
        """
        out = self.predict(x, self._batch_size("predict_proba", batch_size))
        return out if isinstance(self.layers[-1], Softmax) else softmax(out)

    def predict_classes(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """argmax of predict over the last axis, as a NumPy int array."""
        return asnumpy(self.predict(x, self._batch_size("predict_classes", batch_size)).argmax(axis=-1))

    def _batch_size(self, method: str, batch_size: int | None) -> int:
        """``batch_size`` checked for ``method``; None is the default described in predict."""
        if batch_size is None:
            if self.backend == "numpy" and not self.needs_build:
                return predict_batch_size(self, PREDICT_BATCH_SIZE["numpy"])
            return PREDICT_BATCH_SIZE.get(self.backend, 256)
        return check_batch_size(f"Sequential.{method}", batch_size)

    # -- parameters, modes, devices -------------------------------------------
    def parameters(self) -> ParameterView:
        """A live view of every parameter, named "<index>.<Layer>.<key>".

        Live, so an optimizer made before the first forward (lazy layers)
        still sees the parameters created by it.
        """
        return ParameterView(self._parameter_list)

    def _parameter_list(self) -> list[Parameter]:
        return [Parameter(layer, key, f"{i}.{layer.name}.{key}")
                for i, layer in enumerate(self.layers) for key in layer.params]

    @property
    def training(self) -> bool:
        return all(layer.training for layer in self.layers)

    def train(self) -> "Sequential":
        for layer in self.layers:
            layer.train()
        return self

    def eval(self) -> "Sequential":
        for layer in self.layers:
            layer.eval()
        return self

    def to(self, backend: str) -> "Sequential":
        """Move every parameter to "numpy" or "cupy" (optimizers follow at their next step)."""
        for layer in self.layers:
            layer.to(backend)
        self.backend = backend
        return self

    def astype(self, dtype: Any) -> "Sequential":
        self.dtype = np.dtype(dtype)
        for layer in self.layers:
            layer.astype(self.dtype)
        return self

    def seed_randomness(self, *seed: int) -> None:
        """Reseed every stochastic layer (Dropout) from ``seed`` and its position."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dropout):
                layer.seed([*seed, i])

    # -- description -------------------------------------------------------------
    def summary(self, input_shape: tuple[int, ...] | None = None) -> str:
        """A table of layer, output shape and parameter count (like torchsummary)."""
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        if shape is None:
            raise ValueError("Sequential.summary: the model is not built yet; pass input_shape, "
                             "e.g. summary((1, 1, 28, 28))")
        if any(not layer.built for layer in self.layers):
            self.build(shape)
        rows, total = [], 0
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            count = layer.num_parameters()
            total += count
            rows.append((f"{layer.name}-{i + 1}", str([-1, *shape[1:]]), f"{count:,}"))
        width = [max(len(r[k]) for r in rows + [("Layer (type)", "Output Shape", "Param #")]) for k in range(3)]
        line = "-" * (sum(width) + 8)
        head = f"{'Layer (type)':>{width[0]}}    {'Output Shape':>{width[1]}}    {'Param #':>{width[2]}}"
        body = [f"{a:>{width[0]}}    {b:>{width[1]}}    {c:>{width[2]}}" for a, b, c in rows]
        return "\n".join([line, head, "=" * len(line), *body, "=" * len(line),
                          f"Total params: {total:,}", line])

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential(\n{inner}\n)"

    # -- state ----------------------------------------------------------------
    def buffers(self) -> dict[str, tuple[Layer, str]]:
        """Every buffer (non-trained state such as running statistics), named like parameters.

        Maps "<index>.<Layer>.<key>" to (layer, key); the live array is layer.buffers[key].
        """
        return {f"{i}.{layer.name}.{key}": (layer, key)
                for i, layer in enumerate(self.layers) for key in layer.buffers}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as a NumPy array, keyed by its name."""
        state = {p.name: asnumpy(p.data).copy() for p in self.parameters()}
        state.update({name: asnumpy(layer.buffers[key]).copy() for name, (layer, key) in self.buffers().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy arrays into the parameters and buffers (any backend); names and shapes must match.

        Everything is checked before anything is written, so a bad state leaves the
        model as it was. A model with lazy layers must be built first (it has no
        parameters to fill yet).
        """
        self._require_built("load_state_dict")
        slots = {p.name: (p.layer.params, p.key) for p in self.parameters()}
        slots.update({name: (layer.buffers, key) for name, (layer, key) in self.buffers().items()})
        missing, unexpected = set(slots) - set(state), set(state) - set(slots)
        if missing or unexpected:
            raise ValueError(f"Sequential.load_state_dict: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        values = {name: np.asarray(asnumpy(state[name])) for name in slots}
        for name, (store, key) in slots.items():
            if values[name].shape != tuple(store[key].shape):
                raise ValueError(f"Sequential.load_state_dict: {name} has shape {tuple(store[key].shape)}, "
                                 f"got {values[name].shape}")
        for name, (store, key) in slots.items():
            store[key] = to_backend(values[name].astype(self.dtype), self.backend)

    def get_config(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name, "input_shape": self.input_shape,
                "layers": [{"type": layer.name, "config": layer.get_config()} for layer in self.layers]}

    def _require_built(self, what: str) -> None:
        lazy = [f"{i}.{layer.name}" for i, layer in enumerate(self.layers) if layer.needs_build]
        if lazy:
            raise ValueError(f"Sequential.{what}: the model is not built yet (lazy layers {', '.join(lazy)} have "
                             f"no parameters); call model.build(input_shape), e.g. build((1, 1, 28, 28)), "
                             f"or run one batch through it first")

    def save(self, path: str | os.PathLike) -> None:
        """Architecture (JSON) and weights in one .npz that loads on either backend (written atomically)."""
        self._require_built("save")
        from .checkpoint import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None) -> "Sequential":
        """Rebuild a model saved with save(); on ``backend`` (default: the current one).

        Raises ValueError naming the file when it is not a dualconv model file.
        """
        from .checkpoint import load_model

        return load_model(path, backend)


def forward_batches(model: Sequential, x: Any, batch_size: int, banded: bool = True) -> list[Any]:
    """model's eval-mode outputs for x in consecutive batches of ``batch_size``, in order
    (predict's work). Nothing back-propagates through them, so with ``banded`` a run of
    Conv2D, pointwise layers, Flatten and Dense is computed in bands on the CPU
    (inference_bands.py)."""
    if not banded:
        return [model.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    bands = BandedInference()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = model._prepared(x[i:i + batch_size])
        outs.append(bands.forward(model._run_order, xb))
    return outs


def run_order(layers: list[Layer]) -> list[Layer]:
    """The order the layers run in: as listed, except that a ReLU directly
    followed by a MaxPool2D runs after it, on the pooled output.

    The result is the same and the ReLU touches kh*kw times fewer numbers
    (4x for 2x2 pooling). ReLU is nondecreasing, so the maximum of the ReLUs
    of a window is the ReLU of its maximum; NaN propagates through both in
    either order, and MaxPool2D's padding never fills a whole window, so a
    window's maximum is always an image pixel. Gradients are the same too:
    when a window's maximum is positive, ReLU leaves every value above 0 as
    it is, so the first maximum (the pixel that gets the gradient) is the
    same pixel in x and in ReLU(x), and ReLU passes the gradient; when it is
    0 or less (or NaN), both orders give the window's pixels 0. (Only a
    signed zero may differ, and with a NaN or inf *gradient* a non-positive
    window routes it to a different pixel of that window.)
    """
    order = list(layers)
    i = 0
    while i < len(order) - 1:
        if type(order[i]) is ReLU and type(order[i + 1]) is MaxPool2D:
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    return order

