"""The `fast` MNIST recipe, one epoch, in dualconv and in PyTorch: the same network, initial
weights, schedule, batch order and test set, in the same run.

    DUALCONV_DATA=/path/with/mnist python benchmarks/fast_mnist_vs_torch.py [--seed 0] [--threads 2]
                                                                            [--device cpu|cuda] [--repeats 1]

dualconv trains as ``dualconv train --model fast --epochs 1`` does (``Trainer.fit`` with the
model's TRAINING_DEFAULTS: SGD with momentum and weight decay, one-cycle schedule stepped
per batch, random shifts); PyTorch trains its twin of ``dualconv.models.fast`` from
dualconv's initial weights with ``torch.optim.SGD`` and ``OneCycleLR`` (no momentum
cycling), visiting the batches in the order ``Trainer.fit`` does and shifting each image
by the offsets dualconv's ``Shift`` draws (``torch_shift``: the same images). Each
side prints its wall time for the epoch (the training loop only, as ``dualconv train``
prints it) and its test accuracy. The garbage collector runs before each side's epoch:
importing PyTorch leaves the first full collection of the process to whichever side
trains first (about 0.15 s with dualconv's epoch first, measured).
--device cpu: dualconv's NumPy backend and PyTorch on the CPU, ``--threads`` each
(PyTorch's threads, dualconv's cores); --device cuda: dualconv on CuPy and PyTorch on
the GPU, each synchronized before its clock stops. ``--repeats R`` trains R epochs a
side, alternating (dualconv, PyTorch, dualconv, ...), each from the same initial weights,
and prints each side's median epoch and their ratio: on a machine whose speed drifts by
10% within minutes, one epoch a side is one sample of that drift (dualconv's first epoch
also pays for forking its worker).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, for `benchmarks`
from benchmarks.machine_info import describe  # noqa: E402


def dualconv_run(seed: int, backend: str, data) -> tuple[float, float, object, dict]:
    """(epoch seconds, test accuracy, the initial weights, the settings) of dualconv's run."""
    import dualconv as dc
    from dualconv import recipe, runs

    (X, y), (X_test, y_test) = data
    config = runs.settings({"model": "fast", "seed": seed}, None, epochs=1)
    with dc.use_backend(backend):
        trainer = recipe.build_trainer(config, recipe.make_model(config, X.shape[1:], 10), 1, len(X), progress=False)
    initial = [{k: np.array(dc.asnumpy(v)) for k, v in layer.params.items()} for layer in trainer.model.layers]
    gc.collect()  # neither side's clock pays for the other's garbage, or the imports'
    history = trainer.fit(X, y, epochs=1, batch_size=config["batch_size"], seed=seed,
                          augment=recipe.augmentation(config))
    return history["seconds"][0], trainer.evaluate(X_test, y_test)["accuracy"], initial, config


def torch_shift(x, shifts, k: int):
    """dualconv.augment.Shift.by in PyTorch: x (N, C, H, W) moved by shifts (N, 2) (dy, dx),
    zero fill: a zero pad and a gather per pixel. The same images as dualconv's strided
    view of the windows and gather of whole rows, made the way that is faster in PyTorch
    on the CPU (benchmarks/README.md, "MNIST recipes", has the two measured)."""
    import torch
    n, c, h, w = x.shape
    padded = torch.zeros((n, c, h + 2 * k, w + 2 * k), dtype=x.dtype, device=x.device)
    padded[:, :, k:k + h, k:k + w] = x
    rows = torch.arange(h, device=x.device)[None, :, None] + k - shifts[:, :1, None]
    cols = torch.arange(w, device=x.device)[None, None, :] + k - shifts[:, 1:, None]
    picked = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]  # (N, H, W, C)
    return picked.permute(0, 3, 1, 2).contiguous()


def torch_run(initial: list[dict], config: dict, seed: int, device: str, data) -> tuple[float, float]:
    """PyTorch's twin of dualconv.models.fast (its layer sizes read from the weights) from the
    same weights, schedule, batch order and image shifts."""
    import torch
    from torch import nn

    from dualconv import recipe

    (X, y), (X_test, y_test) = data
    ours = [p for p in initial if p]
    (c1, _, k1, _), (c2, _, k2, _) = (p["weight"].shape for p in ours[:2])
    (flat, hidden), (_, classes) = (p["weight"].shape for p in ours[2:])
    model = nn.Sequential(
        nn.Conv2d(1, c1, k1, padding=k1 // 2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(c1, c2, k2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    theirs = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for mine, module in zip(ours, theirs):  # dualconv's Dense holds (in, out), torch's Linear (out, in)
            w = mine["weight"] if isinstance(module, nn.Conv2d) else mine["weight"].T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            module.bias.copy_(torch.from_numpy(mine["bias"]))
    model = model.to(device)
    batch, n = config["batch_size"], len(X)
    steps = -(-n // batch)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                          nesterov=config["nesterov"], weight_decay=config["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], total_steps=steps,
                                                pct_start=config["warmup"], cycle_momentum=False,
                                                anneal_strategy=config["anneal"])
    shift = recipe.augmentation(config)  # the same offsets as dualconv's per (seed, epoch, step)
    loss_fn = nn.CrossEntropyLoss()
    X_dev, y_dev = torch.from_numpy(np.asarray(X)).to(device), torch.from_numpy(np.asarray(y)).to(device)
    order = torch.from_numpy(np.random.default_rng([seed, 0]).permutation(n)).to(device)  # Trainer.fit's order
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model.train()
    sync()
    gc.collect()
    start = time.perf_counter()
    for step, first in enumerate(range(0, n, batch)):
        idx = order[first:first + batch]
        xb = X_dev[idx]
        if shift is not None:
            xb = torch_shift(xb, torch.from_numpy(shift.offsets(len(xb), seed, 0, step)).to(device), shift.k)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), y_dev[idx]).backward()
        opt.step()
        sched.step()
    sync()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.asarray(X_test)).to(device))
        accuracy = (logits.argmax(1).cpu().numpy() == np.asarray(y_test)).mean()
    return seconds, float(accuracy)


def summary(dualconv_seconds: list[float], torch_seconds: list[float]) -> tuple[float, float, float]:
    """(dualconv's median epoch, PyTorch's, the first over the second) of alternating runs."""
    mine, theirs = float(np.median(dualconv_seconds)), float(np.median(torch_seconds))
    return mine, theirs, mine / theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="cores for each side (default: 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="epochs a side, alternating (default: 1)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more, got {args.repeats}")
    os.environ.setdefault("DUALCONV_NUM_THREADS", str(args.threads))
    import torch

    import dualconv as dc
    from dualconv.datasets import load_mnist

    torch.set_num_threads(args.threads)
    data = load_mnist()
    print(describe())
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(args.repeats):
        seconds, accuracy, initial, config = dualconv_run(args.seed, "cupy" if args.device == "cuda" else "numpy",
                                                          data)
        mine.append(seconds)
        print(f"dualconv {dc.__version__}: epoch {seconds:.2f} s, test accuracy {accuracy:.4f}", flush=True)
        t_seconds, t_accuracy = torch_run(initial, config, args.seed, args.device, data)
        theirs.append(t_seconds)
        print(f"PyTorch {torch.__version__} ({args.threads} threads): epoch {t_seconds:.2f} s, "
              f"test accuracy {t_accuracy:.4f}", flush=True)
    mine_median, theirs_median, ratio = summary(mine, theirs)
    if args.repeats > 1:
        print(f"medians of {args.repeats}: dualconv {mine_median:.2f} s, PyTorch {theirs_median:.2f} s")
    print(f"dualconv's time over PyTorch's: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
