"""Export a Sequential to ONNX: one node per layer, in eval semantics, the weights inside.

    import dualconv.onnx
    dualconv.onnx.export(model, "model.onnx")                           # a built model
    dualconv.onnx.export(model, "model.onnx", input_shape=(1, 1, 28, 28))  # or one this builds

The graph has one input, ``"input"`` (batch, *sample shape), and one output, ``"output"``
(batch, *output shape): the model's eval-mode ``predict`` (logits for the bundled models,
probabilities after a final Softmax). The batch axis is dynamic (``"batch"``); every other
axis is the one the model was built for. Each layer becomes the node(s) below, named
"<index>.<Layer>" as ``model.parameters()`` names its weights; each weight and running
statistic is an initializer under its ``state_dict`` name:

    Conv2D      Conv (strides, pads on both sides, dilations, the (O, C, kh, kw) weight)
    MaxPool2D   MaxPool (pads never win; floor of the output size, ceil_mode 0)
    AvgPool2D   AveragePool with count_include_pad=1: padding counts as zeros
    Dense       Gemm(x, W, b), W stored (in, out) as dualconv keeps it
    Flatten     Flatten(axis=1)
    BatchNorm*  BatchNormalization with the running statistics (eval mode) and eps
    ReLU, LeakyReLU, Tanh, Sigmoid, Softmax (axis 1), Identity: the ONNX op of that name
    HardTanh    Clip(x, min_val, max_val)
    Dropout     Identity (Dropout is the identity in eval mode)

Tensors are float32 for a float32 model and float64 for a float64 one: ONNX Runtime's CPU
provider has float64 kernels for Gemm, MaxPool, the activations and BatchNormalization but
not for Conv or AveragePool, so cast a copy first (``copy.deepcopy(model).astype(np.float32)``)
to run a float64 CNN there. ONNX keeps LeakyReLU's alpha and BatchNorm's eps as float32
attributes: in a float64 model they round to float32 (in a float32 one dualconv rounds them so).

A layer defined outside dualconv has no ONNX form: ``export`` raises ValueError naming it
and its index. The exported bytes depend on the weights alone, not on their backend.
``import onnx`` here is the ONNX package (``pip install 'dualconv[onnx]'``).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .backend import asnumpy
from .checkpoint import write_bytes_atomic
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, HardTanh, Identity,
                     Layer, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh)
from .model import Sequential
from .version import __version__

if TYPE_CHECKING:
    import onnx as onnx_module

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_AXIS = "batch"
MIN_OPSET = 13
"""The lowest opset taken: from 13 on, Softmax normalizes over its one axis (before, over
every axis from it on) and Clip, Gemm, BatchNormalization read as used here."""
INSTALL_HINT = "pip install 'dualconv[onnx]'"


def import_onnx() -> Any:
    """The onnx package; ModuleNotFoundError (name "onnx") saying how to install it."""
    try:
        import onnx
    except ModuleNotFoundError as exc:
        if exc.name != "onnx":
            raise
        raise ModuleNotFoundError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}",
                                  name="onnx") from None
    return onnx


def export(model: Sequential, path: str | os.PathLike, input_shape: tuple[int | None, ...] | None = None,
           opset: int = 17) -> "onnx_module.ModelProto":
    """Write ``model`` to ``path`` as an ONNX graph; returns the ModelProto written.

    ``input_shape`` (batch axis included, as for ``model.build``; the batch size is
    ignored, the graph's is dynamic) builds a lazy model, or replaces the shape a built
    model recorded (the layers must take it). ``opset`` is the ai.onnx opset, at least
    13. The model is not changed, apart from being built; the file is written atomically.
    Raises ValueError for a model without an input shape, a layer with no ONNX form or a
    bad opset, and ModuleNotFoundError when onnx is not installed.
    """
    onnx = import_onnx()
    if not isinstance(model, Sequential):
        raise TypeError(f"dualconv.onnx.export: expected a dualconv Sequential, got {type(model).__name__}")
    latest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"dualconv.onnx.export: opset must be an int from {MIN_OPSET} to {latest} (what the "
                         f"installed onnx knows), got {opset!r}")
    for i, layer in enumerate(model.layers):  # before any work: a layer with no ONNX form
        if type(layer) not in _CONVERTERS:
            raise ValueError(f"dualconv.onnx.export: layer {i} ({layer.name}, {type(layer).__module__}."
                             f"{type(layer).__qualname__}) has no ONNX form; the layers that export are "
                             f"{', '.join(sorted(cls.__name__ for cls in _CONVERTERS))}")
    shape = _input_shape(model, input_shape)
    shapes = model.check_shapes((1, *shape[1:]))
    elem = onnx.helper.np_dtype_to_tensor_dtype(model.dtype)
    graph = _Graph(onnx, model.dtype)
    name = INPUT_NAME
    for i, layer in enumerate(model.layers):
        out = OUTPUT_NAME if i == len(model.layers) - 1 else f"{i}.{layer.name}"
        _CONVERTERS[type(layer)](graph, layer, f"{i}.{layer.name}", name, out)
        name = out
    if not model.layers:
        graph.node("Identity", [INPUT_NAME], [OUTPUT_NAME], "identity")

    def value_info(tensor: str, dims: tuple[int, ...]) -> Any:
        return onnx.helper.make_tensor_value_info(tensor, elem, [BATCH_AXIS, *(int(d) for d in dims[1:])])

    proto_graph = onnx.helper.make_graph(graph.nodes, "dualconv", [value_info(INPUT_NAME, shapes[0])],
                                         [value_info(OUTPUT_NAME, shapes[-1])], graph.initializers)
    opset_id = onnx.helper.make_opsetid("", int(opset))
    proto = onnx.helper.make_model(proto_graph, opset_imports=[opset_id], producer_name="dualconv",
                                   producer_version=__version__,
                                   ir_version=onnx.helper.find_min_ir_version_for([opset_id]))
    proto.doc_string = f"dualconv {model.dtype.name} Sequential: " + ", ".join(la.name for la in model.layers)
    write_bytes_atomic(path, proto.SerializeToString())
    return proto


def _input_shape(model: Sequential, input_shape: tuple[int | None, ...] | None) -> tuple[Any, ...]:
    """The model's input shape (batch first), built from ``input_shape`` where given."""
    if input_shape is not None:
        shape = (1, *tuple(input_shape)[1:])
        if model.needs_build:
            model.build(shape)
        else:
            model.check_shapes(shape)
        return shape
    if model.needs_build or model.input_shape is None:
        raise ValueError("dualconv.onnx.export: the model has no input shape yet; pass input_shape (batch "
                         "first), e.g. input_shape=(1, 1, 28, 28), or build it with model.build(...)")
    return (1, *model.input_shape[1:])


class _Graph:
    """The nodes and initializers being gathered, in the model's dtype."""

    def __init__(self, onnx: Any, dtype: np.dtype) -> None:
        self.onnx, self.dtype = onnx, dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def tensor(self, name: str, value: Any) -> str:
        """Add an initializer from a NumPy or CuPy array (cast to the model's dtype)."""
        array = np.ascontiguousarray(asnumpy(value).astype(self.dtype))
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attributes: Any) -> None:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs, name=name, **attributes))


def _weights(graph: _Graph, layer: Layer, prefix: str) -> list[str]:
    """The weight, and the bias where the layer has one, as initializers."""
    return [graph.tensor(f"{prefix}.{key}", layer.params[key]) for key in ("weight", "bias") if key in layer.params]


def _conv(graph: _Graph, layer: Conv2D, prefix: str, x: str, y: str) -> None:
    graph.node("Conv", [x, *_weights(graph, layer, prefix)], [y], prefix, kernel_shape=[layer.kh, layer.kw],
               strides=[layer.sy, layer.sx], pads=[layer.ph, layer.pw, layer.ph, layer.pw],
               dilations=[layer.dy, layer.dx], group=1)


def _pool(op: str, **extra: Any) -> Callable[[_Graph, Any, str, str, str], None]:
    def convert(graph: _Graph, layer: Any, prefix: str, x: str, y: str) -> None:
        graph.node(op, [x], [y], prefix, kernel_shape=[layer.kh, layer.kw], strides=[layer.sy, layer.sx],
                   pads=[layer.ph, layer.pw, layer.ph, layer.pw], ceil_mode=0, **extra)
    return convert


def _dense(graph: _Graph, layer: Dense, prefix: str, x: str, y: str) -> None:
    graph.node("Gemm", [x, *_weights(graph, layer, prefix)], [y], prefix, transA=0, transB=0)


def _batchnorm(graph: _Graph, layer: Any, prefix: str, x: str, y: str) -> None:
    c = layer.num_features
    scale = graph.tensor(f"{prefix}.weight", layer.params["weight"]) if layer.affine else \
        graph.tensor(f"{prefix}.unit_scale", np.ones(c))
    bias = graph.tensor(f"{prefix}.bias", layer.params["bias"]) if layer.affine else \
        graph.tensor(f"{prefix}.zero_bias", np.zeros(c))
    mean = graph.tensor(f"{prefix}.running_mean", layer.buffers["running_mean"])
    var = graph.tensor(f"{prefix}.running_var", layer.buffers["running_var"])
    graph.node("BatchNormalization", [x, scale, bias, mean, var], [y], prefix, epsilon=layer.eps)


def _clip(graph: _Graph, layer: HardTanh, prefix: str, x: str, y: str) -> None:
    low = graph.tensor(f"{prefix}.min_val", np.array(layer.min_val))
    high = graph.tensor(f"{prefix}.max_val", np.array(layer.max_val))
    graph.node("Clip", [x, low, high], [y], prefix)


def _simple(op: str, **attributes: Any) -> Callable[[_Graph, Any, str, str, str], None]:
    def convert(graph: _Graph, layer: Any, prefix: str, x: str, y: str) -> None:
        values = {k: (v(layer) if callable(v) else v) for k, v in attributes.items()}
        graph.node(op, [x], [y], prefix, **values)
    return convert


_CONVERTERS: dict[type, Callable[[_Graph, Any, str, str, str], None]] = {
    Conv2D: _conv,
    MaxPool2D: _pool("MaxPool"),
    AvgPool2D: _pool("AveragePool", count_include_pad=1),
    Dense: _dense,
    Flatten: _simple("Flatten", axis=1),
    BatchNorm1D: _batchnorm,
    BatchNorm2D: _batchnorm,
    ReLU: _simple("Relu"),
    LeakyReLU: _simple("LeakyRelu", alpha=lambda layer: layer.alpha),
    Tanh: _simple("Tanh"),
    Sigmoid: _simple("Sigmoid"),
    HardTanh: _clip,
    Softmax: _simple("Softmax", axis=1),
    Identity: _simple("Identity"),
    Dropout: _simple("Identity"),
}
"""Each exportable layer type (exactly that type: a subclass may compute otherwise) and
what adds its nodes: (graph, layer, node name, input tensor, output tensor)."""
