"""The ``dualconv`` command: train, evaluate and predict.

    python -m dualconv train --dataset mnist --model lenet --epochs 1 --out runs/lenet
    python -m dualconv train --out runs/lenet --epochs 3 --resume
    python -m dualconv evaluate --weights runs/lenet/model.npz
    python -m dualconv predict --weights runs/lenet/model.npz digit.png

``train --out DIR`` writes, in DIR: checkpoint.npz after every epoch (atomically,
so a kill at any moment leaves the last complete one), model.npz (final weights,
loadable with ``Sequential.load``), metrics.json, and with matplotlib
training_curves.png and filters.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import checkpoint, plots
from .backend import asnumpy, set_backend
from .datasets import CLASS_NAMES, DATASETS, DatasetError, load_dataset
from .models import MODELS, TRAINING_DEFAULTS

CHECKPOINT = "checkpoint.npz"
MODEL_FILE = "model.npz"
METRICS = "metrics.json"

# Training settings that a resumed run must share with the run it continues.
# Their argparse default is None, so an explicit value can be told from a default.
CONFIG_DEFAULTS: dict[str, Any] = {
    "dataset": "mnist",
    "model": "lenet",
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": None,  # per optimizer, see DEFAULT_LR
    "momentum": 0.9,
    "lr_decay": 1.0,
    "seed": 0,
    "limit": None,
}
# LeNet, one epoch of MNIST, batch 64, SGD momentum 0.9 (measured, test accuracy):
# lr 0.01 97.3%, 0.02 98.2% (seed 0; 98.2% and 97.9% with seeds 1 and 2), 0.05 98.0%,
# 0.1 96.7%; Adam 1e-3 97.2%.
DEFAULT_LR = {"sgd": 0.02, "adam": 1e-3}


class CLIError(Exception):
    """A user-facing error: printed as one message, exit status 1."""


# -- parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dualconv", description="Train and use small CNNs on NumPy (CPU) or CuPy (GPU)."
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict}")

    train = sub.add_parser("train", help="train a model", description="Train a model; see --out for what is saved.")
    train.add_argument("--dataset", choices=DATASETS, help="dataset (default: mnist)")
    train.add_argument("--model", choices=tuple(MODELS), help="architecture (default: lenet; use weidman or mlp "
                       "for the 8x8 digits)")
    _add_backend(train)
    train.add_argument("--epochs", type=_positive_int, default=1,
                       help="train until this many epochs are done in total (default: 1)")
    train.add_argument("--batch-size", type=_positive_int, help="mini-batch size (default: 64)")
    train.add_argument("--optimizer", choices=("sgd", "adam"), help="sgd (with momentum) or adam (default: sgd)")
    train.add_argument("--lr", type=_positive_float,
                       help=f"learning rate (default: {DEFAULT_LR['sgd']} for sgd, {DEFAULT_LR['adam']} for adam)")
    train.add_argument("--momentum", type=float, help="SGD momentum (default: 0.9)")
    train.add_argument("--lr-decay", type=float, metavar="GAMMA",
                       help="multiply the learning rate by GAMMA after every epoch (default: 1.0, constant)")
    train.add_argument("--seed", type=int, help="seed of the initial weights, shuffling and dropout (default: 0)")
    _add_data_dir(train)
    train.add_argument("--out", type=Path, help="directory for checkpoint.npz, model.npz, metrics.json and plots")
    train.add_argument("--resume", action="store_true",
                       help="continue from the checkpoint in --out (same settings; --epochs may grow)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--limit", type=_positive_int, metavar="N",
                       help="train on the first N training images only (quick runs)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="loss, accuracy and confusion matrix of saved weights on a test set")
    evaluate.add_argument("--weights", type=Path, required=True, help="a model.npz written by train")
    evaluate.add_argument("--dataset", choices=DATASETS,
                          help="test set to use (default: the one in metrics.json beside the weights, else mnist)")
    _add_data_dir(evaluate)
    _add_backend(evaluate)
    evaluate.add_argument("--batch-size", type=_positive_int, default=1000, help="inference batch (default: 1000)")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        help="classify PNG images",
        description="Print the predicted class of each image. Images must be grayscale (colour is converted) "
        "and exactly the size the model was trained on: 28x28 for MNIST and Fashion-MNIST, 8x8 for digits; "
        "light strokes on a dark background, as in MNIST. Needs Pillow.",
    )
    predict.add_argument("--weights", type=Path, required=True, help="a model.npz written by train")
    predict.add_argument("--dataset", choices=DATASETS,
                         help="for class names (default: from metrics.json beside the weights, else digits 0-9)")
    _add_backend(predict)
    predict.add_argument("images", nargs="+", type=Path, help="image files (PNG, 28x28 grayscale for MNIST)")
    predict.set_defaults(func=cmd_predict)
    return parser


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                        help="auto picks cupy when a GPU is usable (default: auto)")


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path,
                        help="where the dataset's .gz files are (also searched: $DUALCONV_DATA/<dataset>, "
                        "the user cache)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except (CLIError, DatasetError) as exc:
        print(f"dualconv {args.command}: error: {exc}", file=sys.stderr)
        return 1


# -- train -------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .losses import SoftmaxCrossEntropy
    from .trainer import Trainer
    from .optim import ExponentialLR

    backend = _set_backend(args.backend)
    out: Path | None = args.out
    resumed = None
    if args.resume:
        if out is None:
            raise CLIError("--resume needs --out, the directory holding checkpoint.npz")
        if (out / CHECKPOINT).is_file():
            resumed = checkpoint.load_checkpoint(out / CHECKPOINT)
        else:
            print(f"no {CHECKPOINT} in {out}: starting from scratch")
    elif out is not None and (out / CHECKPOINT).is_file():
        print(f"note: {out / CHECKPOINT} will be overwritten (pass --resume to continue it)")
    config = _config(args, resumed.meta["config"] if resumed else None)
    if out is not None:
        for stale in out.glob(f".{CHECKPOINT}.*.tmp"):  # left by a run killed while writing
            stale.unlink()

    (X_train, y_train), (X_test, y_test) = load_dataset(config["dataset"], args.data_dir)
    if config["limit"] is not None:
        X_train, y_train = X_train[: config["limit"]], y_train[: config["limit"]]

    model, optimizer = _model_and_optimizer(config, X_train.shape[1:])
    schedule = ExponentialLR(optimizer, gamma=config.get("lr_decay", 1.0))
    history: dict[str, list] = {}
    start_epoch = 0
    if resumed is not None:
        model.load_state_dict(resumed.model_state)
        optimizer.load_state_dict(resumed.optimizer_state)
        history, start_epoch = resumed.history, resumed.epoch
        schedule.epoch = start_epoch
        optimizer.lr = schedule.lr_at(start_epoch)
        print(f"resuming {out / CHECKPOINT} after epoch {start_epoch}")

    print(f"{config['model']} on {config['dataset']} ({len(X_train)} train, {len(X_test)} test images), "
          f"{backend} backend, {_device_name(backend)}; {_count(model):,} parameters")

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.4f}  "
              f"test loss {logs['val_loss']:.4f}  test acc {logs['val_accuracy']:.4f}  "
              f"{logs['images_per_second']:,.0f} img/s  {logs['seconds']:.1f} s", flush=True)
        if out is not None:
            checkpoint.save_checkpoint(out / CHECKPOINT, model, optimizer, epoch + 1, history,
                                       meta={"config": config})

    trainer = Trainer(model, SoftmaxCrossEntropy(), optimizer, scheduler=schedule,
                      progress=not args.no_progress)
    wall = time.perf_counter()
    if start_epoch >= args.epochs:
        print(f"already trained for {start_epoch} epochs (--epochs {args.epochs}); nothing to do")
    else:
        trainer.fit(X_train, y_train, epochs=args.epochs, batch_size=config["batch_size"],
                    validation_data=(X_test, y_test), shuffle=True, seed=config["seed"],
                    initial_epoch=start_epoch, on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - wall

    result = evaluate_model(model, X_test, y_test)
    print(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")
    if out is not None:
        metrics = _metrics(config, backend, history, result, len(X_train), len(X_test), wall, start_epoch)
        checkpoint.save_model_atomic(model, out / MODEL_FILE)
        checkpoint.write_json_atomic(out / METRICS, metrics)
        _write_plots(model, history, out, X_train.shape[1:])
        print(f"wrote {out / MODEL_FILE}, {out / METRICS}")
    return 0


def _model_and_optimizer(config: dict[str, Any], image_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The configured model, built for inputs of ``image_shape`` (C, H, W), and its optimizer."""
    from .optim import SGD, Adam

    model = MODELS[config["model"]](num_classes=len(CLASS_NAMES[config["dataset"]]), seed=config["seed"])
    try:
        model.build((1, *image_shape))
    except ValueError as exc:
        raise CLIError(f"model {config['model']} cannot take {config['dataset']} images of shape "
                       f"{tuple(image_shape)}: {exc}. Try --model weidman or --model mlp.") from None
    if config["optimizer"] == "sgd":
        return model, SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    return model, Adam(model.parameters(), lr=config["lr"])


def _config(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The training settings: explicit arguments, else the checkpoint's, else the defaults."""
    explicit = {k: getattr(args, k) for k in CONFIG_DEFAULTS if getattr(args, k) is not None}
    if saved is not None:
        clashes = [f"--{k.replace('_', '-')} {v} (checkpoint: {saved[k]})"
                   for k, v in explicit.items() if v != saved[k]]
        if clashes:
            raise CLIError("--resume continues with the checkpoint's settings, but these differ: "
                           + ", ".join(clashes) + ". Drop them, or train into a new --out.")
        return dict(saved)
    tuned = TRAINING_DEFAULTS.get(explicit.get("model", CONFIG_DEFAULTS["model"]), {})
    config = {**CONFIG_DEFAULTS, **{k: v for k, v in tuned.items() if k != "lr"}, **explicit}
    if config["lr"] is None:
        config["lr"] = tuned.get("lr", DEFAULT_LR)[config["optimizer"]]
    return config


def _set_backend(name: str) -> str:
    try:
        return set_backend(name)
    except RuntimeError as exc:
        raise CLIError(f"{exc}; use --backend numpy (or auto)") from None


def _count(model: Any) -> int:
    return int(sum(np.prod(p.data.shape) for p in model.parameters()))


def evaluate_model(model: Any, X: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> dict[str, Any]:
    """Mean cross-entropy, accuracy and confusion matrix of ``model`` on (X, y) (scikit-learn metrics)."""
    from sklearn.metrics import accuracy_score, confusion_matrix

    from .losses import SoftmaxCrossEntropy

    logits = asnumpy(model.predict(X, batch_size=batch_size)).astype(np.float64)
    loss = float(SoftmaxCrossEntropy().forward(logits, y))
    predicted = logits.argmax(axis=1)
    classes = list(range(logits.shape[1]))
    return {
        "loss": loss,
        "accuracy": float(accuracy_score(y, predicted)),
        "correct": int((predicted == y).sum()),
        "confusion_matrix": confusion_matrix(y, predicted, labels=classes).tolist(),
    }


def _metrics(config: dict[str, Any], backend: str, history: dict[str, list], result: dict[str, Any],
             n_train: int, n_test: int, wall: float, start_epoch: int) -> dict[str, Any]:
    seconds = float(sum(history.get("seconds", [])))
    epochs = len(history.get("loss", []))
    return {
        "dataset": config["dataset"],
        "model": config["model"],
        "config": config,
        "epochs": epochs,
        "train_images": n_train,
        "test_images": n_test,
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "confusion_matrix": result["confusion_matrix"],
        "history": history,
        "seconds": seconds,
        "images_per_second": n_train * epochs / seconds if seconds > 0 else None,
        "wall_seconds_this_run": wall,
        "resumed_after_epoch": start_epoch or None,
        "backend": backend,
        "device": _device_name(backend),
        "versions": _versions(),
    }


def _device_name(backend: str) -> str:
    if backend == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _versions() -> dict[str, str | None]:
    from . import __version__

    try:
        import cupy

        cupy_version: str | None = cupy.__version__
    except Exception:
        cupy_version = None
    return {"python": platform.python_version(), "numpy": np.__version__, "cupy": cupy_version,
            "dualconv": __version__}


def _write_plots(model: Any, history: dict[str, list], out: Path, input_shape: tuple[int, ...]) -> None:
    if not plots.matplotlib_available():
        print("matplotlib is not installed: no PNG plots (pip install 'dualconv[plot]')")
        return
    if history.get("loss"):
        plots.plot_history(history, out / "training_curves.png")
    filters = _first_layer_filters(model, input_shape)
    if filters is not None:
        plots.plot_filters(filters, out / "filters.png")


def _first_layer_filters(model: Any, input_shape: tuple[int, ...]) -> np.ndarray | None:
    """The first weight as images (O, C, kh, kw): a conv kernel, or a Dense layer on raw pixels."""
    for p in model.parameters():
        weight = asnumpy(p.data)
        if weight.ndim == 4:
            return weight
        if weight.ndim == 2 and weight.shape[0] == int(np.prod(input_shape)):
            return weight.T.reshape(-1, *input_shape)[:32]
        return None
    return None


# -- evaluate and predict -------------------------------------------------------------


def _load_weights(path: Path, backend: str) -> Any:
    from .model import Sequential

    if not path.is_file():
        raise CLIError(f"no weights file {path} (train --out DIR writes DIR/{MODEL_FILE})")
    try:
        return Sequential.load(path, backend=backend)
    except (ValueError, KeyError, OSError) as exc:
        raise CLIError(f"{path} is not a dualconv model file: {exc}") from None


def _dataset_beside(weights: Path) -> str | None:
    """The dataset named in the metrics.json next to the weights, if any."""
    try:
        return json.loads((weights.parent / METRICS).read_text()).get("dataset")
    except (OSError, ValueError):
        return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    backend = _set_backend(args.backend)
    model = _load_weights(args.weights, backend)
    dataset = args.dataset or _dataset_beside(args.weights) or "mnist"
    _, (X_test, y_test) = load_dataset(dataset, args.data_dir)
    expected = tuple(model.input_shape[1:]) if model.input_shape else None
    if expected is not None and expected != X_test.shape[1:]:
        raise CLIError(f"{args.weights} takes inputs of shape {expected}, but {dataset} images are "
                       f"{X_test.shape[1:]}: pass the --dataset it was trained on")
    result = evaluate_model(model, X_test, y_test, batch_size=args.batch_size)
    print(f"{dataset} test set: loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f} "
          f"({result['correct']}/{len(y_test)})")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(_format_matrix(np.array(result["confusion_matrix"])))
    return 0


def _format_matrix(matrix: np.ndarray) -> str:
    width = max(len(str(matrix.max())), len(str(len(matrix) - 1))) + 1
    head = " " * 3 + "".join(f"{j:>{width}}" for j in range(matrix.shape[1]))
    rows = [f"{i:>2} " + "".join(f"{v:>{width}}" for v in row) for i, row in enumerate(matrix)]
    return "\n".join([head, *rows])


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A grayscale image as float32 (1, H, W) in [0, 1]; it must be exactly ``size`` (H, W)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise CLIError("predict needs Pillow to read images: pip install pillow") from None
    try:
        with Image.open(path) as image:
            width, height = image.size
            if (height, width) != tuple(size):
                raise CLIError(f"{path} is {width}x{height}; the model expects {size[1]}x{size[0]} grayscale "
                               f"images (resize it first)")
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise CLIError(f"cannot read {path} as an image: {exc}") from None
    return (pixels / np.float32(255.0))[None]


def cmd_predict(args: argparse.Namespace) -> int:
    backend = _set_backend(args.backend)
    model = _load_weights(args.weights, backend)
    if not model.input_shape or len(model.input_shape) != 4 or model.input_shape[1] != 1:
        raise CLIError(f"{args.weights} does not take (N, 1, H, W) grayscale images: input {model.input_shape}")
    size = tuple(model.input_shape[2:])
    X = np.stack([read_image(path, size) for path in args.images])
    logits = asnumpy(model.predict(X)).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    dataset = args.dataset or _dataset_beside(args.weights)
    names = CLASS_NAMES.get(dataset or "mnist")
    for path, p in zip(args.images, probs):
        k = int(p.argmax())
        label = f"{k} ({names[k]})" if names and names[k] != str(k) else str(k)
        print(f"{path}: {label}  p={p[k]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
