"""CNNClassifier: a dualconv network as a scikit-learn classifier.

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler
    clf = make_pipeline(MinMaxScaler(), CNNClassifier(epochs=20, random_state=0))
    clf.fit(X_train, y_train).score(X_test, y_test)

It follows scikit-learn's estimator rules: the constructor stores its
arguments unchanged, ``fit`` sets the learned state in attributes ending in
"_", and a fitted estimator pickles (the network travels as its state_dict
and is rebuilt from ``model`` on unpickling), so it works in Pipeline,
GridSearchCV (n_jobs > 1 included) and cross_val_score.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .backend import asnumpy, use_backend
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .models import MODELS
from .optim import SGD, Adam, Optimizer
from .trainer import Trainer

# The smallest image side LeNet takes: conv 5x5 pad 2, pool 2, conv 5x5, pool 2 leave >= 1x1.
LENET_MIN_SIDE = 12
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
SGD_MOMENTUM = 0.9


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """A dualconv network trained with softmax cross-entropy, as a scikit-learn classifier.

    Parameters
    ----------
    model : "auto", a name in ``dualconv.models.MODELS`` ("lenet", "lenet-bn",
        "weidman", "mlp") or a callable ``model(num_classes=k, seed=s)`` returning a
        Sequential. "auto" picks LeNet for images at least 12x12, the
        one-layer CNN "weidman" for smaller images, and "mlp" for plain vectors.
    input_shape : how to read one row of a 2-D X, e.g. (1, 28, 28). None: a
        square number of features is one square grayscale image, anything else
        a plain vector. Ignored for 4-D X (N, C, H, W), which is images already.
    epochs : passes over the data in ``fit`` (``partial_fit`` makes one).
    batch_size : mini-batch size.
    optimizer : "adam" or "sgd" (momentum 0.9).
    lr : learning rate; None: 1e-3 for adam, 0.01 for sgd.
    backend : "numpy", "cupy" or "auto" (cupy when a GPU is usable).
    random_state : None, an int or a RandomState: the initial weights, the
        shuffling and dropout masks. With an int, fit is reproducible.
    verbose : 0 silent; 1 a line per epoch and a progress bar.

    The network computes in X's dtype: float32 input stays float32 (faster),
    anything else becomes float64.

    Attributes
    ----------
    classes_ : the sorted labels seen in fit (any type, strings included).
    n_features_in_ : features per row of X (channels for 4-D X).
    input_shape_ : the shape of one sample as the network sees it.
    model_ : the trained dualconv Sequential.
    n_iter_ : epochs trained so far.
    history_ : per-epoch training loss and accuracy.
    """

    def __init__(self, model: str | Callable[..., Sequential] = "auto", input_shape: tuple[int, ...] | None = None,
                 epochs: int = 10, batch_size: int = 32, optimizer: str = "adam", lr: float | None = None,
                 backend: str = "numpy", random_state: Any = None, verbose: int = 0) -> None:
        self.model = model
        self.input_shape = input_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose

    # -- training -------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> "CNNClassifier":
        """Train a fresh network for ``epochs`` epochs on X (2-D or 4-D) and labels y."""
        self._check_hyperparameters()
        X, y = validate_data(self, X, y, reset=True, allow_nd=True, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        self._start(X, classes)
        self._train(X, y_index, int(self.epochs), "fit")
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "CNNClassifier":
        """One epoch on (X, y), continuing the current network (the first call creates it).

        ``classes``: every label that will ever occur; needed on the first call
        unless that batch holds them all, ignored later.
        """
        first = not hasattr(self, "model_")
        if first:
            self._check_hyperparameters()
        X, y = validate_data(self, X, y, reset=first, allow_nd=True, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        if first:
            self._start(X, np.unique(y if classes is None else classes))
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"CNNClassifier.partial_fit: labels {unknown.tolist()} are not among classes_ "
                             f"{self.classes_.tolist()}; pass every label as classes= on the first call")
        self._train(X, np.searchsorted(self.classes_, y), 1, "partial_fit")
        return self

    def _start(self, X: np.ndarray, classes: np.ndarray) -> None:
        """Set classes_, input_shape_ and seeds, and build a fresh network and optimizer."""
        if len(classes) < 2:
            raise ValueError(f"CNNClassifier: y has only one class ({classes.tolist()}); a classifier needs "
                             f"at least two classes")
        self.classes_ = classes
        self.input_shape_ = self._sample_shape(X)
        rng = check_random_state(self.random_state)
        self._model_seed, self._shuffle_seed = (int(s) for s in rng.randint(0, 2**31 - 1, size=2))
        self._dtype = np.dtype(X.dtype)
        self.model_, self._optimizer = self._build()
        self.n_iter_ = 0
        self.history_: dict[str, list[float]] = {}

    def _build(self) -> tuple[Sequential, Optimizer]:
        with use_backend(self.backend):
            factory = self._model_factory()
            model = factory(num_classes=len(self.classes_), seed=self._model_seed)
            if not isinstance(model, Sequential):
                raise TypeError(f"CNNClassifier: model must return a dualconv Sequential, got {type(model).__name__}")
            model.astype(self._dtype)
            try:
                model.build((1, *self.input_shape_))
            except ValueError as exc:
                raise ValueError(f"CNNClassifier: model {self.model!r} cannot take samples of shape "
                                 f"{self.input_shape_}: {exc}") from None
        lr = DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)
        if self.optimizer == "sgd":
            return model, SGD(model.parameters(), lr=lr, momentum=SGD_MOMENTUM)
        return model, Adam(model.parameters(), lr=lr)

    def _model_factory(self) -> Callable[..., Sequential]:
        if callable(self.model):
            return self.model
        name = self.model
        if name == "auto":
            if len(self.input_shape_) == 1:
                name = "mlp"
            else:
                name = "lenet" if min(self.input_shape_[1:]) >= LENET_MIN_SIDE else "weidman"
        return MODELS[name]

    def _train(self, X: np.ndarray, y_index: np.ndarray, epochs: int, what: str) -> None:
        X = self._images(X, what)
        self.model_.to(self._backend_name())
        trainer = Trainer(self.model_, SoftmaxCrossEntropy(), self._optimizer, progress=self.verbose > 0)

        def report(epoch: int, logs: dict[str, float]) -> None:
            for key in ("loss", "accuracy"):
                self.history_.setdefault(key, []).append(logs[key])
            if self.verbose:
                print(f"epoch {epoch + 1}: loss {logs['loss']:.4f}  acc {logs['accuracy']:.4f}  "
                      f"{logs['seconds']:.1f} s", flush=True)

        with use_backend(self._backend_name()):
            trainer.fit(X.astype(self._dtype, copy=False), y_index.astype(np.int64), epochs=self.n_iter_ + epochs,
                        batch_size=int(self.batch_size), seed=self._shuffle_seed, initial_epoch=self.n_iter_,
                        on_epoch_end=report)
        self.n_iter_ += epochs

    # -- prediction -----------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """(n_samples, n_classes) class probabilities, rows summing to 1 (float64).

        Those of ``Sequential.predict_proba``: the softmax of the logits, or the outputs
        of a model that ends in a Softmax layer; normalized again in float64.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=(np.float64, np.float32))
        X = self._images(X, "predict").astype(self._dtype, copy=False)
        self.model_.to(self._backend_name())
        with use_backend(self._backend_name()):
            proba = asnumpy(self.model_.predict_proba(X, batch_size=max(int(self.batch_size), 256)))
        proba = proba.astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, as labels from classes_."""
        proba = self.predict_proba(X)  # checks that the estimator is fitted
        return self.classes_[np.argmax(proba, axis=1)]

    # -- shapes and checks ----------------------------------------------------------
    def _sample_shape(self, X: np.ndarray) -> tuple[int, ...]:
        """One sample's shape for the network: (C, H, W) for images, (n_features,) for vectors."""
        if X.ndim == 4:
            return tuple(int(s) for s in X.shape[1:])
        if X.ndim != 2:
            raise ValueError(f"CNNClassifier: X must be 2-D (n_samples, n_features) or 4-D (N, C, H, W), "
                             f"got shape {X.shape}")
        n = X.shape[1]
        if self.input_shape is not None:
            shape = tuple(int(s) for s in self.input_shape)
            if len(shape) not in (1, 3) or math.prod(shape) != n:
                raise ValueError(f"CNNClassifier: input_shape {self.input_shape!r} must be (C, H, W) or "
                                 f"(n_features,) with {n} entries in all, one per feature of X")
            return shape
        side = math.isqrt(n)
        return (1, side, side) if side * side == n else (n,)

    def _images(self, X: np.ndarray, what: str) -> np.ndarray:
        """X reshaped to (N, *input_shape_), after checking it matches what fit saw."""
        if X.ndim == 4:
            if tuple(X.shape[1:]) != self.input_shape_:
                raise ValueError(f"CNNClassifier.{what}: X has samples of shape {tuple(X.shape[1:])}, but "
                                 f"the network was fitted on {self.input_shape_}")
            return X
        if X.ndim != 2:
            raise ValueError(f"CNNClassifier.{what}: X must be 2-D (n_samples, n_features) or 4-D "
                             f"(N, C, H, W), got shape {X.shape}")
        return X.reshape(len(X), *self.input_shape_)

    def _check_hyperparameters(self) -> None:
        problems = []
        if not (callable(self.model) or self.model == "auto" or self.model in MODELS):
            problems.append(f"model must be 'auto', one of {sorted(MODELS)} or a callable, got {self.model!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                problems.append(f"{name} must be a positive int, got {value!r}")
        if self.optimizer not in DEFAULT_LR:
            problems.append(f"optimizer must be one of {sorted(DEFAULT_LR)}, got {self.optimizer!r}")
        if self.lr is not None and not float(self.lr) > 0:
            problems.append(f"lr must be positive or None, got {self.lr!r}")
        if self.backend not in ("numpy", "cupy", "auto"):
            problems.append(f"backend must be 'numpy', 'cupy' or 'auto', got {self.backend!r}")
        if problems:
            raise ValueError("CNNClassifier: " + "; ".join(problems))

    def _backend_name(self) -> str:
        with use_backend(self.backend) as name:
            return name

    # -- pickling ---------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """The network and optimizer travel as NumPy state dicts (any backend, any layers)."""
        state = super().__getstate__()
        if "model_" in state:
            state = dict(state, model_=self.model_.state_dict(), _optimizer=self._optimizer.state_dict())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if isinstance(state.get("model_"), dict):
            model_state, optimizer_state = self.model_, self._optimizer
            self.model_, self._optimizer = self._build()
            self.model_.load_state_dict(model_state)
            self._optimizer.load_state_dict(optimizer_state)

    def expected_failed_checks(self) -> dict[str, str]:
        """The scikit-learn estimator checks this estimator is known to fail, with the reason."""
        return {}
