"""The Layer contract every layer follows.

    y = layer.forward(x)      # or layer(x)
    gx = layer.backward(gy)   # after a forward; fills layer.grads

``layer.params`` and ``layer.grads`` are dicts of the live arrays ("weight",
"bias"): an optimizer writes into ``params`` in place and the layer sees it.
Layers whose input size is given as None build their parameters at the first
forward, from the shape they see (as PyTorch's Lazy layers do).

``layer.buffers`` holds state that is not trained (BatchNorm's running
statistics): saved, loaded, cast and moved like the parameters, but never
seen by an optimizer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import backend_of, get_backend, to_backend, xp_for
from ..init import default_rng


class Layer:
    """Base class: forward/backward, params/grads, train/eval, lazy build."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}  # non-trained state, e.g. running statistics
        self.training = True
        self.built = False
        self.dtype = np.dtype(np.float32)
        self._backend: str | None = None
        self._cache: Any = None  # what the last forward kept for backward
        self._need_input_grad = True  # set by each backward call
        self._seen = _SeenShapes()  # what the checks passed since the last cast

    # -- building -----------------------------------------------------------
    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator | None = None,
              dtype: Any = None) -> tuple[int, ...]:
        """Create parameters for inputs of ``input_shape``; returns the output shape.

        The shape is checked first (``check_shape``): a rejected shape leaves the
        layer exactly as it was, unbuilt and without parameters.
        """
        if not self.built:
            self.check_shape(input_shape, dtype if dtype is not None else self.dtype)
        if dtype is not None and np.dtype(dtype) != self.dtype:
            self.dtype = np.dtype(dtype)
            self._seen.forget()
        if not self.built:
            self._build_shape = tuple(input_shape)
            self._create_params(self._build_shape, rng if rng is not None else default_rng())
            self.built = True
        return self.output_shape(input_shape)

    def check_shape(self, input_shape: tuple[int, ...], dtype: Any = np.float32) -> tuple[int, ...]:
        """The output shape for an input of ``input_shape`` and ``dtype``, after the same
        checks ``forward`` makes on an array; raises the same errors and changes nothing."""
        self._check_input(_ShapeOnly(input_shape, dtype))
        return self.output_shape(tuple(input_shape))

    @property
    def needs_build(self) -> bool:
        """True while a lazy layer still has parameters to create (at its first forward or build)."""
        return not self.built and type(self)._create_params is not Layer._create_params

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Draw fresh initial parameters from ``rng`` (no-op before the layer is built)."""
        if self.built:
            self._create_params(self._build_shape, rng)
            self.grads.clear()

    def _create_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        """Layers with parameters override this (drawn in NumPy, then moved)."""

    def _set_param(self, name: str, value: np.ndarray) -> None:
        backend = self._backend or get_backend()
        self.params[name] = to_backend(value.astype(self.dtype), backend)

    def _set_buffer(self, name: str, value: np.ndarray) -> None:
        backend = self._backend or get_backend()
        self.buffers[name] = to_backend(value.astype(self.dtype), backend)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the output for an input of ``input_shape`` (batch dim included)."""
        return tuple(input_shape)

    # -- the contract -------------------------------------------------------
    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def forward(self, x: Any) -> Any:
        """Checks and builds, then computes the output (``_forward``).

        An input of the array type, shape and dtype of one that passed the checks since
        the last cast is not checked again but for its backend: the checks read nothing
        else of the input, and of the layer only what its first forward (the build) fixes
        and its dtype.
        """
        try:
            seen = (type(x), x.shape, x.dtype) in self._seen.inputs
        except (AttributeError, TypeError):  # not an array, or an unhashable shape
            seen = False
        if not seen:
            self._check_and_build(x)
        elif self.params:
            self._check_backend(x)
        return self._forward(x)

    def _check_and_build(self, x: Any) -> None:
        """All of forward's checks of x; builds the layer at its first input."""
        self._check_input(x)
        if self.params:
            self._check_backend(x)
        if not self.built:
            self._backend = backend_of(x)
            self.build(tuple(x.shape), dtype=x.dtype if x.dtype.kind == "f" else None)
        elif self.params and x.dtype != self.dtype:
            raise TypeError(f"{self.name}: expected {self.dtype} input (the parameters' dtype), "
                            f"got {x.dtype}; cast the input or call .astype() on the layer")
        self._seen.passed(x)

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        """Gradient of the loss with respect to the last forward's input.

        Fills ``grads``. With ``input_grad=False`` (the first layer of a
        model) it returns None, and layers that can skip that work do.
        """
        if self._cache is None:
            raise RuntimeError(f"{self.name}.backward called before forward")
        self._need_input_grad = input_grad
        gx = self._backward(gy)
        return gx if input_grad else None

    def _forward(self, x: Any) -> Any:
        raise NotImplementedError

    def _backward(self, gy: Any) -> Any:
        raise NotImplementedError

    def _check_input(self, x: Any) -> None:
        """Raise a clear error for an input this layer cannot take."""
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise TypeError(f"{self.name}: expected an array, got {type(x).__name__}")

    def _check_backend(self, x: Any) -> None:
        """Parameters and input must live on the same backend (as PyTorch's same-device rule)."""
        first = next(iter(self.params.values()))
        if type(first) is type(x):  # one array type, one backend: the step's case, made cheap
            return
        expected, got = backend_of(first), backend_of(x)
        if got != expected:
            raise TypeError(f"{self.name}: expected all arrays on the same backend, but the input is a "
                            f"{got} array and the parameters are on {expected}; move the layer with "
                            f".to({got!r}) or the input with dualconv.backend.to_backend(x, {expected!r})")

    def _require_ndim(self, x: Any, ndim: int, layout: str) -> None:
        if x.ndim != ndim:
            raise ValueError(
                f"{self.name}: expected a {ndim}-D input {layout}, got shape {tuple(x.shape)}")

    def _output_shape_of(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``output_shape(input_shape)`` for an input shape forward accepted, worked out once
        per shape (a backward checks its gradient against it every step)."""
        out = self._seen.outputs.get(input_shape)
        return out if out is not None else self._seen.output_shape(self, input_shape)

    def _check_grad_shape(self, gy: Any, expected: tuple[int, ...]) -> None:
        if gy.shape != expected and tuple(gy.shape) != tuple(expected):
            raise ValueError(
                f"{self.name}.backward: expected a gradient of shape {tuple(expected)} "
                f"(the forward output), got {tuple(gy.shape)}")

    # -- a batch computed in parts (dualconv/engine) ----------------------------
    couples_samples = True
    """Whether one sample's output may depend on the other samples of its batch (BatchNorm
    in training does). A model holding such a layer computes every batch whole; the others
    may run a batch in parts on several cores (dualconv/engine), each part on a copy of
    the layer that shares its parameters. Each built-in layer that works sample by sample
    says False; a layer written outside dualconv is taken to couple its samples until it
    says otherwise. A part computed in a worker process changes nothing of the layer but
    its gradients: other state a forward changes stays in that copy."""

    first_sample = 0
    """Where the samples this layer computes start in their batch: 0, or the first sample
    of the part a copy computes (dualconv/engine). A layer whose output depends on a
    sample's index (Dropout's masks) counts from it."""

    # -- modes, devices, description ----------------------------------------
    def train(self) -> "Layer":
        self.training = True
        return self

    def eval(self) -> "Layer":
        self.training = False
        return self

    def to(self, backend: str) -> "Layer":
        """Move parameters, gradients and buffers to "numpy" or "cupy"."""
        xp_for(backend)  # raises a clear error when the backend cannot run
        self._backend = backend
        for store in (self.params, self.grads, self.buffers):
            for key, value in store.items():
                store[key] = to_backend(value, backend)
        return self

    def astype(self, dtype: Any) -> "Layer":
        """Cast parameters and buffers to a floating dtype (float32 or float64)."""
        self.dtype = np.dtype(dtype)
        self._seen.forget()
        for store in (self.params, self.buffers):
            for key, value in store.items():
                store[key] = value.astype(self.dtype)
        self.grads.clear()
        return self

    @property
    def name(self) -> str:
        return type(self).__name__

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (for save/load)."""
        return {}

    def num_parameters(self) -> int:
        return int(sum(int(np.prod(p.shape)) for p in self.params.values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.name}({args})"


class _SeenShapes:
    """What a layer's input checks passed: (array type, shape, dtype) signatures, and the output
    shape of each input shape; at most LIMIT of each (forgotten all at once past it)."""

    LIMIT = 64

    def __init__(self) -> None:
        self.inputs: set[tuple[Any, ...]] = set()
        self.outputs: dict[tuple[int, ...], tuple[int, ...]] = {}

    def __reduce__(self) -> tuple[type, tuple[()]]:
        """A pickled copy starts empty: what one layer object's checks passed is its own
        (a layer unpickled elsewhere checks its first inputs again)."""
        return _SeenShapes, ()

    def passed(self, x: Any) -> None:
        """x's signature passed the checks."""
        if len(self.inputs) >= self.LIMIT:
            self.inputs.clear()
        try:
            self.inputs.add((type(x), x.shape, x.dtype))
        except TypeError:  # an unhashable shape: checked every time
            pass

    def output_shape(self, layer: Layer, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``layer.output_shape(input_shape)``, now remembered."""
        if len(self.outputs) >= self.LIMIT:
            self.outputs.clear()
        out = self.outputs[input_shape] = tuple(layer.output_shape(input_shape))
        return out

    def forget(self) -> None:
        """The layer's dtype, which its checks read, changed (a cast)."""
        self.inputs.clear()
        self.outputs.clear()


class _ShapeOnly:
    """Stands in for an input array when only its shape and dtype are checked."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape = tuple(shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(dtype)
