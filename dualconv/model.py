"""Sequential: a stack of layers, run forward in order and backward in reverse."""
from __future__ import annotations

import json
import os
from contextlib import nullcontext
from operator import attrgetter
from typing import Any, Iterable

import numpy as np

from . import kernels
from .arguments import check_batch_size
from .backend import asnumpy, backend_of, get_array_module, get_backend, to_backend, use_backend
from .checkpoint import MODEL_KEY, read_npz, write_npz
from .layers import LAYER_TYPES, Dropout, Layer, MaxPool2D, ReLU, Softmax
from .layers.activations import softmax
from .optim import Parameter, ParameterView

_PARAMS, _BUFFERS = attrgetter("params"), attrgetter("buffers")
_NEEDS_BUILD = attrgetter("needs_build")  # no generator frame per layer: read every step

PREDICT_BATCH_SIZE = {"numpy": 256, "cupy": 256}
"""predict's default batch per backend: large enough that a CPU batch splits into a part
for each core, small enough that its activations stay near the cache
(benchmarks/lenet_vs_torch.py, the predict rows, chooses it)."""


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
        return self.input_shape is None or any(map(_NEEDS_BUILD, self.layers))

    def check_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Every layer's input shape for a model input of ``input_shape``, then the output shape.

        Each layer makes the checks its forward makes (number of dimensions,
        channels, window sizes); the first one that fails raises its error, naming
        the layer. Nothing is built or changed.
        """
        shapes = [tuple(input_shape)]
        try:
            for layer in self.layers:
                shapes.append(tuple(layer.check_shape(shapes[-1], self.dtype)))
        except ValueError as exc:
            hint = _channels_last_hint(shapes[0])
            if hint:
                raise ValueError(f"{exc}{hint}") from None
            raise
        return shapes

    # -- compute --------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """x: (N, ...) -> the last layer's output. Casts x to the model's dtype and backend.

        The layers run in order, ``for layer in layers: x = layer(x)``
        (kernels.layers_forward; on the CPU the batch's parts run that loop on each core).
        """
        x = self._prepared(x)
        return kernels.layers_forward(self._run_order, x)

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
        layers = tuple(self.layers)
        if self._ordered[0] != layers:  # run_order depends on the layers alone: once per list
            self._ordered = (layers, run_order(self.layers))
        self._run_order = self._ordered[1]
        return x

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        """Back-propagate gy, the loss gradient for the output; fills every layer's grads.

        Returns gx, the gradient for the input, or None with ``input_grad=False``
        (training needs only the parameter gradients, so the first layer skips gx).
        The layers run in the reverse of the last forward's order (run_order), each
        taking gy and returning gx (kernels.layers_backward).
        """
        return kernels.layers_backward(self._run_order or self.layers, gy, input_grad)

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """Outputs for x in eval mode, computed in batches; returns them on x's backend.

        ``batch_size`` defaults to PREDICT_BATCH_SIZE for the model's backend.
        """
        batch_size = self._batch_size("predict", batch_size)
        if hasattr(x, "shape") and (len(x.shape) == 0 or x.shape[0] == 0):
            raise ValueError(f"Sequential.predict: expected one sample or more, got an array of shape {tuple(x.shape)}")
        was_training = self.training
        self.eval()
        try:
            outs = [self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
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
            return PREDICT_BATCH_SIZE.get(self.backend, 256)
        return check_batch_size(f"Sequential.{method}", batch_size)

    # -- parameters, modes, devices -------------------------------------------
    def parameters(self) -> ParameterView:
        """A live view of every parameter, named "<index>.<Layer>.<key>".

        Live, so an optimizer made before the first forward (lazy layers)
        still sees the parameters created by it.
        """
        return ParameterView(self._parameter_list)

    _parameters: tuple[Any, list[Parameter]] = (None, [])
    """(the layers and their parameter keys when listed, the handles listed then)."""
    _buffers: tuple[Any, dict[str, tuple[Layer, str]]] = (None, {})
    """(the layers and their buffer keys when named, buffers()'s names then)."""
    _ordered: tuple[Any, list[Layer]] = (None, [])
    """(the layers when ordered, their run_order then)."""

    def _parameter_list(self) -> list[Parameter]:
        """A handle per parameter, in layer order; the same list (do not change it) while
        the layers and their parameter keys are the same. A handle reads its layer's
        ``params[key]`` when used, so a move (``to``), cast or load_state_dict, which replace
        the arrays under the same keys, needs no new list; a lazy layer's first forward,
        which adds keys, or a change to ``layers`` makes one."""
        layers = self.layers
        seen = (tuple(layers), tuple(map(tuple, map(_PARAMS, layers))))
        listed, handles = self._parameters
        if listed != seen:
            handles = [Parameter(layer, key, f"{i}.{layer.name}.{key}")
                       for i, layer in enumerate(layers) for key in layer.params]
            self._parameters = (seen, handles)
        return handles

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
        layers = self.layers
        seen = (tuple(layers), tuple(map(tuple, map(_BUFFERS, layers))))
        listed, named = self._buffers
        if listed != seen:  # made once per list of layers and of their buffers' keys
            named = {f"{i}.{layer.name}.{key}": (layer, key)
                     for i, layer in enumerate(layers) for key in layer.buffers}
            self._buffers = (seen, named)
        return dict(named)

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
        arrays = self.state_dict()
        arrays[MODEL_KEY] = np.array(json.dumps(self.get_config()))
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None) -> "Sequential":
        """Rebuild a model saved with save(); on ``backend`` (default: the current one).

        Raises ValueError naming the file when it is not a dualconv model file.
        """
        config, state = read_npz(path, MODEL_KEY, "model file (an .npz written by Sequential.save)")
        try:
            layers = [LAYER_TYPES[item["type"]](**_tuples(item["config"])) for item in config["layers"]]
            dtype, input_shape = config["dtype"], config["input_shape"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a dualconv model file: its architecture cannot be read "
                             f"({type(exc).__name__}: {exc})") from None
        with use_backend(backend) if backend is not None else nullcontext():
            model = cls(layers, dtype=dtype)
            if input_shape is not None:
                model.build((1, *input_shape[1:]))
        try:
            model.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"{path}: the weights do not fit the architecture: {exc}") from None
        return model


def _channels_last_hint(shape: tuple[int, ...]) -> str:
    """A hint for an image batch that looks channels-last, (N, H, W, C) with 1, 3 or 4
    channels, where dualconv's layers read (N, C, H, W); else ''."""
    if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return (f" (the input {tuple(shape)} looks channels-last, (N, H, W, C); dualconv takes "
                f"(N, C, H, W): pass x.transpose(0, 3, 1, 2))")
    return ""


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; layer constructors want pairs as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


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

