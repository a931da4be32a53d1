"""``dualconv export --weights model.npz --out model.onnx``: saved weights to an ONNX file.

The graph is dualconv.onnx's (input "input", output "output", a dynamic batch axis). Every
failure (no weights file, a file that is not a model, a layer with no ONNX form, no onnx
package, an unwritable --out) is a CLIError: one line, exit status 1, as for every command.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_checks import CLIError, positive_int
from .runs import MODEL_FILE


def add_export_command(sub: Any) -> None:
    """Add the ``export`` subcommand to the subparsers ``sub`` of the dualconv parser."""
    export = sub.add_parser("export", help="write saved weights as an ONNX model",
                            description="Write a model.npz as an ONNX graph (input 'input', output 'output', "
                            "any batch size), for ONNX Runtime and other tools. Needs the onnx package: "
                            "pip install 'dualconv[onnx]'.")
    export.add_argument("--weights", type=Path, required=True, help="a model.npz written by train")
    export.add_argument("--out", type=Path, help="the .onnx file to write (default: the weights' path with "
                        "the suffix .onnx)")
    export.add_argument("--opset", type=positive_int, default=17, help="ONNX opset, 13 or later (default: 17)")
    export.add_argument("--input-shape", type=_sample_shape, metavar="C,H,W",
                        help="one sample's shape, e.g. 1,28,28 (default: the shape the model was trained on)")
    export.set_defaults(func=cmd_export)


def _sample_shape(text: str) -> tuple[int, ...]:
    """'1,28,28' -> (1, 28, 28); an argparse type."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, e.g. 1,28,28; got {text}")
    return shape


def cmd_export(args: argparse.Namespace) -> int:
    from . import onnx as to_onnx
    from .model import Sequential

    path: Path = args.weights
    if not path.is_file():
        raise CLIError(f"no weights file {path} (train --out DIR writes DIR/{MODEL_FILE})")
    try:
        to_onnx.import_onnx()
        model = Sequential.load(path, backend="numpy")
    except ModuleNotFoundError as exc:
        if exc.name != "onnx":
            raise
        raise CLIError(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    out: Path = args.out if args.out is not None else path.with_suffix(".onnx")
    if out.is_dir():
        raise CLIError(f"--out {out} is a directory; give a file name, e.g. {out / 'model.onnx'}")
    shape = None if args.input_shape is None else (1, *args.input_shape)
    try:
        proto = to_onnx.export(model, out, input_shape=shape, opset=args.opset)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    dims = [[d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]
            for t in (proto.graph.input[0], proto.graph.output[0])]
    print(f"wrote {out}: ONNX opset {args.opset}, {model.dtype.name}, input '{to_onnx.INPUT_NAME}' "
          f"{dims[0]}, output '{to_onnx.OUTPUT_NAME}' {dims[1]}")
    return 0
