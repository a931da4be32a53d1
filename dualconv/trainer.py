"""Trainer: mini-batch training and evaluation of a Sequential model.

One step is forward, loss, backward, optimizer step, all on the model's
backend. On the GPU the dataset is moved to the device once when it fits
(else batch by batch), and the loss and accuracy are accumulated on the
device and read back only every ``log_every`` steps, so a step does no
host-device copy or synchronization of its own.

A step whose loss is NaN or infinite never reaches the weights: inside
``fit``, ``train_step`` runs under the fit's divergence guard
(``divergence.LastFiniteState``), which skips such a step on the device,
without a per-step sync.

With ``cuda_graph=True`` on the CuPy backend, ``fit`` captures the step of its
full batches as one CUDA graph and replays it (step_graph.py).
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from .arguments import check_batch_size, check_integer
from .augment import Shift
from .backend import asnumpy, backend_of, get_array_module, to_backend, xp_for
from .divergence import LastFiniteState
from .kernels import cuda_gemm
from .losses import Loss
from .model import Sequential
from .optim import LRSchedule, Optimizer
from .step_graph import StepGraph

Augmentation = Callable[[Any, int, int, int], Any]  # (batch, seed, epoch, step) -> batch; see augment.py

History = dict[str, list[float]]


class Trainer:
    """Trainer(model, loss, optimizer).fit(X, y, epochs, batch_size) -> history.

    ``progress`` turns the per-epoch tqdm bar on or off (it also stays off when
    stderr is not a terminal); ``log_every`` is how many steps pass between reads
    of the running loss (one device sync each). ``optimizer`` may be None for a
    Trainer that only evaluates.

    ``cuda_graph=True``: on the CuPy backend, with the data resident on the device, 1-D
    integer labels and ``augment`` None or a ``Shift``, ``fit`` runs its first full batch
    eagerly, captures the next as one CUDA graph and replays it for every later full batch
    (dualconv/step_graph.py): one graph launch a step. A smaller last batch, validation
    and ``evaluate`` run eagerly; elsewhere the switch changes nothing. Such a fit makes
    every matrix product with dualconv's gemm kernel instead of cuBLAS (CuPy cannot
    capture cuBLAS), so its weights equal an eager fit's with the same products bit for
    bit, and a cuBLAS fit's within the products' rounding.
    """

    def __init__(self, model: Sequential, loss: Loss, optimizer: Optimizer | None = None,
                 scheduler: LRSchedule | None = None, progress: bool = True, log_every: int = 20,
                 cuda_graph: bool = False) -> None:
        self.model, self.loss, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.progress = bool(progress)
        self.cuda_graph = bool(cuda_graph)
        if int(log_every) < 1:
            raise ValueError(f"Trainer: log_every must be >= 1, got {log_every!r}")
        self.log_every = int(log_every)
        self._guard: LastFiniteState | None = None  # fit's divergence guard while fit runs

    # -- checks ----------------------------------------------------------------
    def _check_data(self, X: Any, y: Any, what: str) -> tuple[Any, Any]:
        if not hasattr(X, "shape") or not hasattr(y, "shape"):
            raise TypeError(f"Trainer.{what}: X and y must be arrays, got {type(X).__name__} and {type(y).__name__}")
        if len(X) != len(y):
            raise ValueError(f"Trainer.{what}: X has {len(X)} samples but y has {len(y)}; they must match")
        if len(X) == 0:
            raise ValueError(f"Trainer.{what}: got an empty dataset")
        if getattr(X, "dtype", np.dtype(np.float32)).kind in "biu":
            raise TypeError(f"Trainer.{what}: X holds {X.dtype} values, not floats; a model reads pixels "
                            f"scaled to [0, 1]: pass X.astype(np.float32) / 255 for 8-bit images")
        out = self._output_shape(X, what)
        y_host = asnumpy(y)
        if y_host.ndim == 1:
            if y_host.dtype.kind not in "iu":
                raise TypeError(f"Trainer.{what}: 1-D labels must be integers, got {y_host.dtype}")
            classes = out[-1] if len(out) == 2 else None
            if y_host.min() < 0 or (classes is not None and y_host.max() >= classes):
                raise ValueError(f"Trainer.{what}: labels must be in [0, {classes}), got values from "
                                 f"{y_host.min()} to {y_host.max()}")
        return X, y

    def _output_shape(self, X: Any, what: str) -> tuple[int, ...]:
        """The model's output shape for X (built for it if it is not yet); a shape the model
        rejects is an error that names the argument and the shape the user gave."""
        try:
            return self.model.build(tuple(X.shape))
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"Trainer.{what}: X of shape {tuple(X.shape)} does not fit the model: {exc}") from None

    def _on_device(self, X: Any, y: Any) -> tuple[Any, Any]:
        """The data on the model's backend when it fits (GPU: under a quarter of free memory;
        with ``cuda_graph``, an array-like such as ScaledImages is made an array to fit)."""
        if self.model.backend == "numpy":
            return (asnumpy(X) if backend_of(X) == "cupy" else X), asnumpy(y)
        if backend_of(X) == "cupy":
            return X, to_backend(y, "cupy")
        free, _ = xp_for("cupy").cuda.runtime.memGetInfo()
        if getattr(X, "nbytes", free) + y.nbytes < free // 4:
            if self.cuda_graph and not isinstance(X, np.ndarray):  # a graph gathers from resident data
                X = np.asarray(X[0:len(X)])
            if isinstance(X, np.ndarray):
                return to_backend(X, "cupy"), to_backend(y, "cupy")
        return X, y

    # -- training ----------------------------------------------------------------
    def fit(self, X: Any, y: Any, epochs: int = 1, batch_size: int = 64,
            validation_data: tuple[Any, Any] | None = None, shuffle: bool = True,
            seed: int | None = None, initial_epoch: int = 0,
            on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
            augment: Augmentation | None = None) -> History:
        """Train for epochs [initial_epoch, epochs); returns per-epoch loss and accuracy.

        X: (N, ...) inputs (an array, or an array-like that indexes batches, such
        as the datasets' ``ScaledImages``); y: (N,) int labels or (N, C) targets.
        With ``seed``, epoch e's shuffle order and dropout masks come from (seed, e)
        alone, so a run resumed at ``initial_epoch`` (model and optimizer state
        restored) ends exactly where an uninterrupted one does.
        ``augment`` (e.g. ``augment.Shift(2)``) transforms each training batch on the
        model's backend, from (seed, epoch, step) alone; None trains on the data as is.
        A per-batch schedule (``scheduler.per_batch``) is stepped after every optimizer
        step, a per-epoch one after each epoch.

        Raises ``divergence.TrainingDiverged`` (a ValueError) when a loss turns NaN
        or infinite, naming the epoch and step; the model and optimizer then hold
        the state after the last finite step.
        """
        if self.optimizer is None:
            raise ValueError("Trainer.fit: this Trainer has no optimizer; pass one to Trainer(model, loss, optimizer)")
        check_integer("Trainer.fit", "epochs", epochs, 1)
        batch_size = check_batch_size("Trainer.fit", batch_size)
        check_integer("Trainer.fit", "initial_epoch", initial_epoch, 0)
        if initial_epoch >= epochs:
            raise ValueError(f"Trainer.fit: initial_epoch ({initial_epoch}) must be below epochs ({epochs}); "
                             f"epochs is the total to reach, not the number to add")
        self.loss.verify_labels()  # a label error found on the device by an earlier train_step
        X, y = self._check_data(X, y, "fit")
        if validation_data is not None:
            self._check_data(*validation_data, "fit(validation_data)")
        X = X if X.dtype == self.model.dtype else X.astype(self.model.dtype)
        X, y = self._on_device(X, y)
        history: History = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [],
                            "seconds": [], "images_per_second": []}
        self.loss.check_labels = False
        guard = LastFiniteState(self.model, self.optimizer)
        graph = self._step_graph(X, y, batch_size, augment)
        if graph is not None:
            X, y = graph.X, graph.y
        try:
            with contextlib.ExitStack() as captured:
                if graph is not None:  # every step on the graph's stream, every product capturable
                    captured.enter_context(graph.stream)
                    captured.enter_context(cuda_gemm.capturable())
                self._fit_epochs(X, y, initial_epoch, epochs, batch_size, shuffle, seed, guard,
                                 augment, graph, validation_data, on_epoch_end, history)
        finally:
            self.loss.check_labels = True
            self._guard = None
        return {k: v for k, v in history.items() if v}

    def _step_graph(self, X: Any, y: Any, batch_size: int, augment: Augmentation | None) -> StepGraph | None:
        """fit's captured step when ``cuda_graph`` asks for one and the fit allows it (see the
        class docstring; at least two full batches an epoch), else None."""
        if not self.cuda_graph or self.model.backend != "cupy" or not (augment is None
                                                                      or isinstance(augment, Shift)):
            return None
        cupy = xp_for("cupy")
        if (backend_of(X) != "cupy" or y.ndim != 1 or y.dtype.kind not in "iu"
                or not hasattr(cupy.cuda.Stream, "begin_capture")):
            return None
        starts = batch_starts(len(X), batch_size, self.model)
        if sum(1 for a, b in zip(starts, starts[1:] + [len(X)]) if b - a == batch_size) < 2:
            return None
        return StepGraph(self, cupy.ascontiguousarray(X), y.astype(np.int64, copy=False), batch_size,
                         len(starts), augment)

    def _fit_epochs(self, X: Any, y: Any, initial_epoch: int, epochs: int, batch_size: int,
                    shuffle: bool, seed: int | None, guard: LastFiniteState,
                    augment: Augmentation | None, graph: StepGraph | None,
                    validation_data: tuple[Any, Any] | None,
                    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
                    history: History) -> None:
        """fit's loop over its epochs, filling ``history``."""
        for epoch in range(initial_epoch, epochs):
            self._guard = guard  # train_step runs under it in the epoch's loop only
            logs = self._fit_epoch(X, y, epoch, epochs, batch_size, shuffle, seed, guard, augment,
                                   graph)
            self._guard = None
            if validation_data is not None:
                val = self.evaluate(*validation_data)
                logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            for key, value in logs.items():
                history[key].append(value)
            if self.scheduler is not None and not self.scheduler.per_batch:
                self.scheduler.step()
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)

    def _fit_epoch(self, X: Any, y: Any, epoch: int, epochs: int, batch_size: int,
                   shuffle: bool, seed: int | None, guard: LastFiniteState,
                   augment: Augmentation | None = None, graph: StepGraph | None = None) -> dict[str, float]:
        n = len(X)
        rng = np.random.default_rng(None if seed is None else [seed, epoch])
        augment_seed = int(rng.integers(2**62)) if seed is None else seed
        order = rng.permutation(n) if shuffle else np.arange(n)
        xp = get_array_module(X)
        order = xp.asarray(order)
        if seed is not None:
            self.model.seed_randomness(seed, epoch)
        self.model.train()
        loss_sum = correct = 0
        seen = 0
        start = time.perf_counter()
        starts = batch_starts(n, batch_size, self.model)
        steps = len(starts)
        per_batch = self.scheduler is not None and self.scheduler.per_batch
        if graph is not None:
            graph.start_epoch(order, steps, epoch, augment_seed)
        with tqdm(total=n, desc=f"epoch {epoch + 1}/{epochs}", unit="img",
                  disable=not (self.progress and sys.stderr.isatty()), leave=False) as bar:
            for step, (first, last) in enumerate(zip(starts, starts[1:] + [n])):
                size = last - first
                guard.begin_step(step + 1, (seen, seen + size - 1))
                if graph is not None and graph.runs(size):
                    graph.run(guard)
                else:
                    idx = order[first:last]
                    xb, yb = X[idx], y[idx]
                    if augment is not None:
                        xb = augment(to_backend(xb, self.model.backend), augment_seed, epoch, step)
                    batch_loss, batch_correct = self.train_step(xb, yb)
                    if graph is not None:
                        graph.add(batch_loss, batch_correct, size)
                    else:
                        loss_sum = loss_sum + batch_loss * size
                        correct = correct + batch_correct
                if per_batch:
                    self.scheduler.step()
                seen += size
                if graph is not None:
                    loss_sum, correct = graph.loss_sum, graph.correct
                if (step + 1) % self.log_every == 0 or step + 1 == steps:
                    if not guard.all_finite():
                        guard.restore()
                        raise guard.error("Trainer.fit", epoch)
                    running = float(loss_sum) / seen
                    bar.set_postfix(loss=f"{running:.4f}", acc=f"{float(correct) / seen:.4f}", refresh=False)
                    bar.update(seen - bar.n)
        seconds = time.perf_counter() - start
        return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n,
                "seconds": seconds, "images_per_second": n / seconds}

    def train_step(self, xb: Any, yb: Any) -> tuple[Any, Any]:
        """One forward/backward/update on a batch; returns (loss, correct count) as device scalars.

        The batch may be on either backend; it is moved to the model's (a copy only if it must move).
        Inside ``fit`` the step runs under fit's divergence guard: the loss is checked on
        the device and the optimizer skips the update when it is not finite. Outside ``fit``
        the loss checks the labels' range on the GPU without a host read: a bad label gives a
        NaN loss, and ``loss.verify_labels()`` (called by fit and evaluate) raises its error.
        """
        xb, yb = to_backend(xb, self.model.backend), to_backend(yb, self.model.backend)
        out = self.model.forward(xb)
        value = self.loss.forward(out, yb)
        self.model.backward(self.loss.backward(), input_grad=False)
        correct = _correct(out, yb)  # both on the model's backend
        if self._guard is not None:
            self._guard.check_loss(value)
        self.optimizer.step(self._guard)
        if self._guard is not None:
            self._guard.end_step()
        return value, correct

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, X: Any, y: Any, batch_size: int = 256,
                 confusion_matrix: bool = False) -> dict[str, Any]:
        """Mean loss and accuracy over (X, y) in eval mode.

        With ``confusion_matrix=True`` (classifiers) also "confusion_matrix": a
        (classes, classes) list of lists, rows the true class, columns the predicted.
        """
        batch_size = check_batch_size("Trainer.evaluate", batch_size)
        self.loss.verify_labels()  # a label error found on the device by an earlier train_step
        X, y = self._check_data(X, y, "evaluate")  # every label, checked once
        was_training = self.model.training
        self.model.eval()
        # labels were checked above, so not again per batch (each check is a device sync)
        check_labels, self.loss.check_labels = self.loss.check_labels, False
        loss_sum = correct = 0
        predicted = []
        try:
            for i in range(0, len(X), batch_size):
                xb, yb = X[i:i + batch_size], y[i:i + batch_size]
                out = self.model.forward(xb)
                loss_sum = loss_sum + self.loss.forward(out, yb) * len(xb)
                correct = correct + _correct(out, to_backend(yb, backend_of(out)))
                if confusion_matrix:
                    predicted.append(out.argmax(axis=1))
        finally:
            self.loss.check_labels = check_labels
            if was_training:
                self.model.train()
        loss = float(loss_sum) / len(X)
        if not np.isfinite(loss):
            raise ValueError(f"Trainer.evaluate: the mean loss is {loss}; check the inputs for NaN/inf "
                             f"(or the model for diverged weights)")
        result: dict[str, Any] = {"loss": loss, "accuracy": float(correct) / len(X)}
        if confusion_matrix:
            result["confusion_matrix"] = _confusion_matrix(asnumpy(y), predicted, out.shape[1])
        return result

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model weights, optimizer state and schedule position (NumPy arrays)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler_epoch": None if self.scheduler is None else self.scheduler.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``: weights, optimizer state, and the schedule at its position
        (steps taken: epochs, or batches for a per-batch schedule), which sets the rate."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler_epoch") is not None:
            self.scheduler.load_state_dict({"position": state["scheduler_epoch"]})


def batch_starts(n: int, batch_size: int, model: Sequential) -> list[int]:
    """Where each of an epoch's batches starts: every ``batch_size`` samples, except that
    a last batch of one sample joins the batch before it when a layer of the model couples
    its samples in training (BatchNorm's batch statistics need two samples)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1 and any(layer.couples_samples for layer in model.layers):
        starts.pop()
    return starts


def _confusion_matrix(y: np.ndarray, predicted: list[Any], classes: int) -> list[list[int]]:
    """counts[t, p]: how many samples of true class t were predicted as p."""
    truth = y if y.ndim == 1 else y.argmax(axis=1)
    guess = np.concatenate([asnumpy(p) for p in predicted])
    counts = np.bincount(truth * classes + guess, minlength=classes * classes)
    return counts.reshape(classes, classes).tolist()


def _correct(out: Any, target: Any) -> Any:
    """How many rows of out pick the target class (labels or one-hot), as a device scalar."""
    labels = target if target.ndim == 1 else target.argmax(axis=1)
    if out.ndim != 2:
        return 0
    return (out.argmax(axis=1) == labels).sum()
