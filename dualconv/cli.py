"""The ``dualconv`` command: train, evaluate and predict (arguments and printing only).

    dualconv train --dataset mnist --model lenet --epochs 1 --out runs/lenet
    dualconv train --out runs/lenet --epochs 3 --resume
    dualconv evaluate --weights runs/lenet/model.npz
    dualconv predict --weights runs/lenet/model.npz digit.png
    dualconv export --weights runs/lenet/model.npz --out lenet.onnx   (cli_export.py)

What a run writes and where is in ``runs.py``; saving and loading in
``checkpoint.py``; training and evaluation in ``trainer.py``; the checks of the
arguments and settings in ``cli_checks.py``. Every error is one
line, ``dualconv <command>: error: ...``, with exit status 1; Ctrl-C exits 130,
SIGTERM 143 (train: after saying where to continue, cli_runs.py); when the reader
of the output goes away (``dualconv evaluate ... | head -1``) the command stops
without a word and exits 141, as a process ended by SIGPIPE does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

import numpy as np

from . import __version__, checkpoint, plots, runs
from .backend import BACKENDS, asnumpy, describe, device_name
from .cli_checks import (CLIError, check_data_dir, check_thread_settings, choose_backend, positive_float,
                         positive_int, quiet_stdout, read_images)
from .cli_export import add_export_command
from .cli_runs import RunDirectory, interrupt_status, resume_command, saving, sigterm_as_interrupt
from .datasets import CLASS_NAMES, DATASETS, DatasetError, load_dataset, load_test_split
from .divergence import TrainingDiverged
from .models import MODELS
from .runs import CHECKPOINT, METRICS, MODEL_FILE
from . import engine


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 1 like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dualconv", description="Train and use small CNNs on NumPy (CPU) or CuPy (GPU).")
    parser.add_argument("--version", action="version", version=f"dualconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict,export,info}")

    train = sub.add_parser("train", help="train a model", description="Train a model; see --out for what is saved.")
    train.add_argument("--dataset", choices=DATASETS, help="dataset (default: mnist)")
    train.add_argument("--model", choices=tuple(MODELS),
                       help="architecture (default: lenet; weidman for the 8x8 digits, which lenet cannot take)")
    _add_backend(train)
    train.add_argument("--epochs", type=positive_int, default=1,
                       help="train until this many epochs are done in total (default: 1)")
    train.add_argument("--batch-size", type=positive_int, help="mini-batch size (default: 64)")
    train.add_argument("--optimizer", choices=("sgd", "adam"), help="sgd (with momentum) or adam (default: sgd)")
    train.add_argument("--lr", type=positive_float,
                       help=f"learning rate (default: {runs.DEFAULT_LR['sgd']} for sgd, {runs.DEFAULT_LR['adam']} "
                       f"for adam); with --resume, the rate for the next epoch")
    train.add_argument("--momentum", type=float, help="SGD momentum, in [0, 1) (default: 0.9; sgd only)")
    train.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (sgd only)")
    train.add_argument("--lr-decay", type=float, metavar="GAMMA",
                       help="multiply the learning rate by GAMMA, in (0, 1], after every epoch (default: 1.0)")
    train.add_argument("--schedule", choices=runs.SCHEDULES,
                       help="step: --lr, times --lr-decay after each epoch (default); onecycle (PyTorch's "
                       "OneCycleLR) or cosine: set after every batch, peaking at --lr")
    train.add_argument("--warmup", type=float, metavar="FRACTION",
                       help="onecycle/cosine: the share of the steps spent rising to --lr (default: 0.25)")
    train.add_argument("--anneal", choices=runs.ANNEALS,
                       help="onecycle: the curve of the rate's rise to --lr and fall from it, cos or linear "
                       "(PyTorch's anneal_strategy; default: cos, linear for --model fast)")
    train.add_argument("--weight-decay", type=float, help="L2 weight decay (default: 0)")
    train.add_argument("--augment", metavar="shift=K",
                       help="shift each training image by up to K pixels (zero fill); default: none "
                       "(shift=1 for --model fast, shift=2 for --model best)")
    train.add_argument("--seed", type=int, help="seed of the initial weights, shuffling and dropout, an integer "
                       ">= 0 (default: 0)")
    _add_data_dir(train)
    train.add_argument("--out", type=Path, help="directory for checkpoint.npz, model.npz, metrics.json and plots "
                       "(default: a new runs/<dataset>-<model>-<n>)")
    existing_run = train.add_mutually_exclusive_group()
    existing_run.add_argument("--resume", action="store_true",
                              help="continue from the checkpoint in --out (same settings; --epochs may grow, "
                              "--lr change); an existing --out without one starts from scratch")
    existing_run.add_argument("--overwrite", action="store_true", help="replace the run already in --out "
                              "(kept in --out/replaced-run-<pid> until the new run's first checkpoint)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when "
                       "stderr is not a terminal)")
    train.add_argument("--no-cuda-graph", action="store_true",
                       help="cupy backend: run every step eagerly instead of replaying a captured CUDA graph "
                       "(the default where the data fits on the GPU)")
    train.add_argument("--limit", type=positive_int, metavar="N",
                       help="train on the first N training images only (quick runs)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="loss, accuracy and confusion matrix of saved weights on a test set")
    evaluate.add_argument("--weights", type=Path, required=True, help="a model.npz written by train")
    evaluate.add_argument("--dataset", choices=DATASETS,
                          help="test set to use (default: the one in metrics.json beside the weights, else mnist)")
    _add_data_dir(evaluate)
    _add_backend(evaluate)
    evaluate.add_argument("--batch-size", type=positive_int, default=256, help="inference batch (default: 256)")
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

    add_export_command(sub)
    info = sub.add_parser("info", help="versions, the GPU, and whether a CUDA kernel compiles and runs on it")
    info.set_defaults(func=lambda args: print(describe() + "\n" + engine.describe()) or 0)
    for command in sub.choices.values():  # a command's own usage errors name the command
        command.set_defaults(command_parser=command)
    return parser


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS,
                        help="auto picks cupy when a GPU is usable (default: $DUALCONV_BACKEND, else auto)")


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path,
                        help="where the dataset's .gz files are, the only place searched when given "
                        "(default: $DUALCONV_DATA/<dataset>, then the user cache, then a download)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.error("give a command: train, evaluate, predict, export or info")
    try:
        with sigterm_as_interrupt():
            check_thread_settings()
            status = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return status
    except (CLIError, DatasetError, runs.SettingsError) as exc:
        print(f"dualconv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"dualconv {args.command}: interrupted", file=sys.stderr)
        return interrupt_status(exc)
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as a process killed by SIGPIPE
        quiet_stdout()
        return 141


def _epochs_in_checkpoint(path: Path) -> int:
    """The epochs the checkpoint at path holds, 0 where there is none. Each save replaces
    the file atomically, so an interrupt anywhere in a save leaves the old checkpoint or
    the new one whole; which one, the file says (a count kept beside the save would be
    one epoch behind when the interrupt comes between the rename and the count)."""
    try:
        return checkpoint.load_checkpoint(path).epoch
    except (OSError, ValueError):
        return 0


# -- train -------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    explicit = {k: getattr(args, k) for k in runs.CONFIG_DEFAULTS if getattr(args, k) is not None}
    runs.check_settings(explicit)
    check_data_dir(args.data_dir)
    backend = choose_backend(args.backend)
    if args.resume and args.out is None:
        raise CLIError("--resume needs --out, the directory holding checkpoint.npz")
    with RunDirectory(args.out, args.resume, args.overwrite) as run:
        resumed = run.resumed
        config = runs.settings(explicit, resumed.meta["config"] if resumed else None,
                               resumed.epoch if resumed else 0, epochs=args.epochs)
        if run.path is None:
            run.create_new(config["dataset"], config["model"])
            print(f"writing this run to {run.path} (choose another place with --out)")
        return _train(args, config, backend, run)


def _train(args: argparse.Namespace, config: dict[str, Any], backend: str, run: RunDirectory) -> int:
    out, resumed = run.path, run.resumed
    assert out is not None
    (X_train, y_train), (X_test, y_test) = load_dataset(config["dataset"], args.data_dir, uint8=True,
                                                        strict=args.data_dir is not None)
    if config["limit"] is not None:
        if config["limit"] > len(X_train):
            print(f"note: --limit {config['limit']} exceeds the {len(X_train)} training images of "
                  f"{config['dataset']}; training on all of them")
        X_train, y_train = X_train.head(config["limit"]), y_train[: config["limit"]]
    trainer = _trainer(config, X_train.shape[1:], args.epochs, len(X_train), progress=not args.no_progress)
    trainer.cuda_graph = backend == "cupy" and not args.no_cuda_graph
    history: dict[str, list] = {}
    start_epoch = 0
    if resumed is not None:
        trainer.load_state_dict(resumed.state)
        history, start_epoch = resumed.history, resumed.epoch
        print(f"resuming {out / CHECKPOINT} after epoch {start_epoch} (learning rate {trainer.optimizer.lr:g})")
    model = trainer.model
    print(f"{config['model']} on {config['dataset']} ({len(X_train)} train, {len(X_test)} test images), "
          f"{backend} backend, {device_name(backend)}; {sum(la.num_parameters() for la in model.layers):,} "
          f"parameters")

    saved = start_epoch  # the epochs finished in out/checkpoint.npz (0: none there)

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        nonlocal saved
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.4f}  "
              f"test loss {logs['val_loss']:.4f}  test acc {logs['val_accuracy']:.4f}  "
              f"{logs['images_per_second']:,.0f} img/s  {logs['seconds']:.1f} s", flush=True)
        with saving(out / CHECKPOINT, saved, out, args.epochs):
            checkpoint.save_checkpoint(out / CHECKPOINT, trainer.state_dict(), epoch + 1, history,
                                       meta={"config": config})
        saved = epoch + 1
        run.first_checkpoint_saved()

    from . import recipe

    wall = time.perf_counter()
    if start_epoch >= args.epochs:
        print(f"already trained for {start_epoch} epoch{'s' * (start_epoch != 1)} (--epochs {args.epochs}); "
              f"nothing to do")
    else:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # fit reports non-finite losses
                trainer.fit(X_train, y_train, epochs=args.epochs, batch_size=config["batch_size"],
                            validation_data=(X_test, y_test), shuffle=True, seed=config["seed"],
                            initial_epoch=start_epoch, on_epoch_end=on_epoch_end, augment=recipe.augmentation(config))
        except TrainingDiverged as exc:
            rate = min(trainer.optimizer.lr / 10, runs.DEFAULT_LR[config["optimizer"]])
            lower = f"--lr {rate:g}"
            if not saved:
                raise CLIError(f"{exc} No checkpoint was written (one is written after each epoch); "
                               f"train again with a lower learning rate, e.g. {lower}") from None
            raise CLIError(f"{exc} The checkpoint of epoch {saved} is kept in {out}; continue from it with a "
                           f"lower learning rate: {resume_command(out, args.epochs, lower)}") from None
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (cli_runs.Terminated)
            saved = _epochs_in_checkpoint(out / CHECKPOINT)  # the interrupt may have come after a save's rename
            where = (f"the checkpoint of epoch {saved} is in {out}; continue with --resume "
                     f"({resume_command(out, args.epochs)})" if saved else
                     "no checkpoint yet (one is written after each epoch)")
            print(f"dualconv train: interrupted during epoch {saved + 1}; {where}", file=sys.stderr)
            return interrupt_status(interrupt)
    wall = time.perf_counter() - wall

    result = trainer.evaluate(X_test, y_test, confusion_matrix=True)
    print(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")
    metrics = runs.metrics_document(config, backend, history, result, len(X_train), len(X_test), wall, start_epoch)
    with saving(out / MODEL_FILE, saved, out, args.epochs):
        model.save(out / MODEL_FILE)
    with saving(out / METRICS, saved, out, args.epochs):
        checkpoint.write_json_atomic(out / METRICS, metrics)
    if plots.matplotlib_available():
        with saving(out, saved, out, args.epochs):
            plots.write_run_plots(model, history, out, X_train.shape[1:])
    else:
        print("matplotlib is not installed: no PNG plots (pip install 'dualconv[plot]')")
    print(f"wrote {out / MODEL_FILE}, {out / METRICS}")
    return 0


def _trainer(config: dict[str, Any], image_shape: tuple[int, ...], epochs: int, n_train: int,
             progress: bool) -> Any:
    """The configured model, built for inputs of ``image_shape`` (C, H, W), its optimizer and Trainer."""
    from .recipe import build_trainer, make_model

    try:
        model = make_model(config, image_shape, len(CLASS_NAMES[config["dataset"]]))
    except ValueError as exc:
        raise CLIError(f"model {config['model']} cannot take {config['dataset']} images of shape "
                       f"{tuple(image_shape)}: {exc}. Try --model {runs.DEFAULT_MODEL[config['dataset']]}.") from None
    return build_trainer(config, model, epochs, n_train, progress)


# -- evaluate and predict -------------------------------------------------------------


def _load_weights(path: Path, backend: str) -> Any:
    from .model import Sequential

    if not path.is_file():
        raise CLIError(f"no weights file {path} (train --out DIR writes DIR/{MODEL_FILE})")
    try:
        return Sequential.load(path, backend=backend)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None


def _dataset_beside(weights: Path) -> str | None:
    """The dataset named in the metrics.json next to the weights, if any."""
    try:
        return json.loads((weights.parent / METRICS).read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .losses import SoftmaxCrossEntropy
    from .trainer import Trainer

    check_data_dir(args.data_dir)
    backend = choose_backend(args.backend)
    model = _load_weights(args.weights, backend)
    dataset = args.dataset or _dataset_beside(args.weights) or "mnist"
    X_test, y_test = load_test_split(dataset, args.data_dir, uint8=True, strict=args.data_dir is not None)
    expected = tuple(model.input_shape[1:]) if model.input_shape else None
    if expected is not None and expected != X_test.shape[1:]:
        raise CLIError(f"{args.weights} takes inputs of shape {expected}, but {dataset} images are "
                       f"{X_test.shape[1:]}: pass the --dataset it was trained on")
    result = Trainer(model, SoftmaxCrossEntropy()).evaluate(X_test, y_test, batch_size=args.batch_size,
                                                            confusion_matrix=True)
    matrix = np.array(result["confusion_matrix"])
    print(f"{dataset} test set: loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f} "
          f"({int(np.trace(matrix))}/{len(y_test)})")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(_format_matrix(matrix))
    return 0


def _format_matrix(matrix: np.ndarray) -> str:
    width = max(len(str(matrix.max())), len(str(len(matrix) - 1))) + 1
    head = " " * 3 + "".join(f"{j:>{width}}" for j in range(matrix.shape[1]))
    rows = [f"{i:>2} " + "".join(f"{v:>{width}}" for v in row) for i, row in enumerate(matrix)]
    return "\n".join([head, *rows])


def cmd_predict(args: argparse.Namespace) -> int:
    backend = choose_backend(args.backend)
    model = _load_weights(args.weights, backend)
    if not model.input_shape or len(model.input_shape) != 4 or model.input_shape[1] != 1:
        raise CLIError(f"{args.weights} does not take (N, 1, H, W) grayscale images: input {model.input_shape}")
    size = tuple(model.input_shape[2:])
    images, failed = read_images(args.images, size)
    if images:
        probs = asnumpy(model.predict_proba(np.stack(list(images.values()))))
        names = CLASS_NAMES.get(args.dataset or _dataset_beside(args.weights) or "mnist")
        for path, p in zip(images, probs):
            k = int(p.argmax())
            label = f"{k} ({names[k]})" if names and names[k] != str(k) else str(k)
            print(f"{path}: {label}  p={p[k]:.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
