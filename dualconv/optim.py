"""Optimizers (SGD with momentum, Adam) and learning-rate schedules.

An optimizer holds Parameter handles, not arrays: a handle reads the live
array from its layer's ``params`` / ``grads`` dicts, so moving a model to
another backend never leaves the optimizer pointing at stale arrays. Its
state (momentum, Adam moments) follows the parameters to their backend.
A step updates every parameter with one call of dualconv.kernels (sgd_update_many,
adam_update_many): plain NumPy per parameter on the CPU, one fused launch for them
all on the GPU.
Inside ``Trainer.fit``, ``step(guard)`` runs the guarded versions of the same
kernels instead, which skip a failed step without a host sync (divergence.py).
In a captured step (the guard's ``clock`` set, dualconv/step_graph.py) they are
the ``*_at`` kernels, which read the step's rate (``device_rates``) and guard code
on the device.
"""
from __future__ import annotations

from itertools import repeat
from operator import attrgetter, getitem, is_
from typing import TYPE_CHECKING, Any, Iterable

from . import kernels
from .backend import asnumpy, backend_of, to_backend

if TYPE_CHECKING:
    from .divergence import LastFiniteState


class Parameter:
    """A handle on ``layer.params[key]`` and ``layer.grads[key]``."""

    def __init__(self, layer: Any, key: str, name: str) -> None:
        self.layer, self.key, self.name = layer, key, name

    @property
    def data(self) -> Any:
        return self.layer.params[self.key]

    @property
    def grad(self) -> Any:
        return self.layer.grads.get(self.key)

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={tuple(self.data.shape)})"


def _arrays(params: list[Parameter]) -> tuple[tuple[Parameter, ...], tuple[Any, ...], tuple[Any, ...]]:
    """(the handles of params that have a gradient, their weights, their gradients). Handles
    of the Parameter class itself, on layers whose grads are plain dicts, are read through
    those dicts without a Python frame per handle (this runs every step); any other handle
    through its properties."""
    if set(map(type, params)) == {Parameter}:
        layers, keys = list(map(_LAYER, params)), list(map(_KEY, params))
        grads = list(map(_GRADS, layers))
        if set(map(type, grads)) == {dict}:  # plain dicts: dict.get is what the handle calls
            gs = tuple(map(dict.get, grads, keys))
            if not any(map(is_, gs, repeat(None))):
                return tuple(params), tuple(map(getitem, map(_PARAMS, layers), keys)), gs
    pairs = [(p, p.grad) for p in params]
    with_grads = tuple([p for p, g in pairs if g is not None])
    return (with_grads, tuple([p.data for p in with_grads]),
            tuple([g for _, g in pairs if g is not None]))


_LAYER, _KEY, _PARAMS, _GRADS = (attrgetter(name) for name in ("layer", "key", "params", "grads"))


class ParameterView:
    """The parameters of a model as they are now: iterating asks the model again."""

    def __init__(self, list_parameters: Any) -> None:
        self._list = list_parameters

    def __iter__(self):
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())


class Optimizer:
    """Base class: ``step()`` updates every parameter in place from its gradient."""

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        # A model's parameters() is a live view (lazy layers add parameters at
        # their first forward), so keep it as it is; anything else is listed now.
        self.params = params if isinstance(params, ParameterView) else list(params)
        if not isinstance(self.params, ParameterView) and not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list; pass model.parameters()")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr!r}")
        self.lr = float(lr)
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0

    def _slots(self, params: tuple[Parameter, ...], name: str, ws: tuple[Any, ...]) -> tuple[Any, ...]:
        """The state arrays ``name`` of params, each of its weight's shape (zeros at first),
        kept on the backend of its weight ``ws[k]``."""
        made = []
        for p, w in zip(params, ws):
            slots = self.state.setdefault(p.name, {})
            value = slots.get(name)
            if value is None:
                value = slots[name] = w * 0
            elif type(value) is not type(w) and backend_of(value) != backend_of(w):
                value = slots[name] = to_backend(value, backend_of(w))
            made.append(value)
        return tuple(made)

    def step(self, guard: LastFiniteState | None = None) -> None:
        """Update every parameter that has a gradient, in place.

        ``guard``: fit's divergence guard (a divergence.LastFiniteState), or None.
        With it, each update runs only while no step failed, after a copy of what it
        changes into ``guard.last_goods(...)``, and flags non-finite results. Every parameter
        goes to one kernel call (sgd_update_many, ...): one launch on the GPU.
        """
        self.steps += 1
        params = list(iter(self.params))  # list(view) would list them twice (its length first)
        if not params:
            raise ValueError(f"{type(self).__name__}: there are no parameters to update")
        with_grads, ws, gs = _arrays(params)
        if with_grads:
            self._update(with_grads, ws, gs, guard)

    def _update(self, params: tuple[Parameter, ...], ws: tuple[Any, ...], gs: tuple[Any, ...],
                guard: LastFiniteState | None) -> None:
        """Update every weight ws[k] of params[k] from its gradient gs[k]: one kernel call for all."""
        raise NotImplementedError

    def device_rates(self, lr: float, step: int) -> tuple[float, ...]:
        """What this optimizer's ``*_at`` kernel reads on the device for step ``step`` (from 1)
        at rate ``lr``: (lr,) here; Adam adds its bias corrections. A captured step's table
        holds them, rounded to the weights' dtype as the eager kernel's plan rounds them."""
        return (lr,)

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters, step count and state arrays (as NumPy), for checkpoints."""
        return {"lr": self.lr, "steps": self.steps,
                "state": {name: {k: asnumpy(v).copy() for k, v in slots.items()}
                          for name, slots in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; each state array goes to its parameter's backend."""
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        backends = {p.name: backend_of(p.data) for p in self.params}

        def own_copy(value: Any, name: str) -> Any:
            moved = to_backend(value, backends.get(name, backend_of(value)))
            return moved.copy() if moved is value else moved

        self.state = {name: {k: own_copy(v, name) for k, v in slots.items()}
                      for name, slots in state["state"].items()}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    g <- g + weight_decay * w;  v <- momentum * v + g;
    w <- w - lr * (g + momentum * v if nesterov else v)   (PyTorch's form).
    """

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs a momentum above 0")
        _check_weight_decay("SGD", weight_decay)
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)

    def _update(self, params: tuple[Parameter, ...], ws: tuple[Any, ...], gs: tuple[Any, ...],
                guard: LastFiniteState | None) -> None:
        vs = self._slots(params, "velocity", ws) if self.momentum else None
        numbers = (self.lr, self.momentum, self.weight_decay, self.nesterov)
        if guard is None:
            kernels.sgd_update_many(ws, gs, vs, *numbers)
            return
        names = tuple([p.name for p in params])
        if vs is None:
            (w_lasts,), v_lasts = guard.last_goods(names, ("param", ws)), None
        else:
            w_lasts, v_lasts = guard.last_goods(names, ("param", ws), ("velocity", vs))
        if guard.clock is None:
            kernels.sgd_update_guarded_many(ws, gs, vs, w_lasts, v_lasts, guard.verdict, guard.code,
                                            *numbers)
            return
        for k, (w, g) in enumerate(zip(ws, gs)):  # a captured step: one graph launch replays them all
            kernels.sgd_update_guarded_at(w, g, None if vs is None else vs[k], w_lasts[k],
                                          None if v_lasts is None else v_lasts[k], guard.verdict,
                                          guard.clock.code_at, guard.clock.rates_at, self.momentum,
                                          self.weight_decay, self.nesterov)


class Adam(Optimizer):
    """Adam (Kingma & Ba): bias-corrected first and second moment estimates.

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    w <- w - lr * m_hat / (sqrt(v_hat) + eps).
    """

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair (b1, b2), got {betas!r}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Adam: betas[{i}] (b{i + 1}) must be in [0, 1), got {beta!r}")
        if not eps > 0:
            raise ValueError(f"Adam: eps must be positive, got {eps!r}")
        _check_weight_decay("Adam", weight_decay)
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def _update(self, params: tuple[Parameter, ...], ws: tuple[Any, ...], gs: tuple[Any, ...],
                guard: LastFiniteState | None) -> None:
        ms, vs = self._slots(params, "m", ws), self._slots(params, "v", ws)
        settings = (self.lr, self.b1, self.b2, self.eps, self.weight_decay, self.steps)
        if guard is None:
            kernels.adam_update_many(ws, gs, ms, vs, *settings)
            return
        w_lasts, m_lasts, v_lasts = guard.last_goods(tuple([p.name for p in params]), ("param", ws),
                                                     ("m", ms), ("v", vs))
        if guard.clock is None:
            kernels.adam_update_guarded_many(ws, gs, ms, vs, w_lasts, m_lasts, v_lasts, guard.verdict,
                                             guard.code, *settings)
            return
        for k, (w, g) in enumerate(zip(ws, gs)):  # a captured step: one graph launch replays them all
            kernels.adam_update_guarded_at(w, g, ms[k], vs[k], w_lasts[k], m_lasts[k], v_lasts[k],
                                           guard.verdict, guard.clock.code_at, guard.clock.rates_at,
                                           *settings[1:5])

    def device_rates(self, lr: float, step: int) -> tuple[float, ...]:
        """(lr, 1 - b1^step, 1 - b2^step): the rate and the bias corrections of step ``step``."""
        return (lr, 1 - self.b1 ** step, 1 - self.b2 ** step)


def _check_weight_decay(owner: str, weight_decay: float) -> None:
    if not weight_decay >= 0:
        raise ValueError(f"{owner}: weight_decay must be >= 0, got {weight_decay!r}")


class LRSchedule:
    """Sets ``optimizer.lr`` from a step count ``epoch`` (its position), like PyTorch's schedulers.

    ``per_batch`` False: the Trainer calls ``step()`` after each epoch; True (schedules.py):
    after every optimizer step, so ``epoch`` counts batches. The position is all a
    schedule's state (``state_dict``), so a checkpoint resumes it exactly.
    """

    per_batch = False

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def step(self) -> None:
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """{"position": steps taken}: what a checkpoint keeps."""
        return {"position": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go to the saved position and set the optimizer's rate for it."""
        self.epoch = int(state["position"])
        self.optimizer.lr = self.lr_at(self.epoch)


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRSchedule):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        super().__init__(optimizer)
        self.gamma = float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** epoch


class LinearLR(LRSchedule):
    """Linear decay from base_lr to final_lr over ``total_epochs`` (the 'linear' schedule)."""

    def __init__(self, optimizer: Optimizer, final_lr: float, total_epochs: int) -> None:
        super().__init__(optimizer)
        self.final_lr, self.total_epochs = float(final_lr), int(total_epochs)

    def lr_at(self, epoch: int) -> float:
        frac = min(epoch, self.total_epochs) / self.total_epochs
        return self.base_lr + (self.final_lr - self.base_lr) * frac
