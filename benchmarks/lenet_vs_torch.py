"""LeNet training throughput: dualconv against PyTorch, same run, on the CPU or the GPU.

    python benchmarks/lenet_vs_torch.py [--device cpu|cuda] [--batch-sizes 64 256] [--cycles 3]
                                        [--threads 2] [--dualconv-blas-threads 1]

--device cpu (default): dualconv's NumPy backend against PyTorch on the CPU.
--device cuda: dualconv's CuPy backend against PyTorch with cuDNN, the data
resident on the GPU for both, each side synchronized before the clock stops.

Each (implementation, batch size) runs in its own fresh process, cycled
``--cycles`` times so both sides see the same machine noise; the report is
the median images/s of each and their ratio. Both sides get the same thread
count and the same glibc malloc settings. PyTorch is the peer: without it
installed, only dualconv's figures are printed. ``--dualconv-blas-threads``
gives NumPy's BLAS its own thread count (PyTorch keeps ``--threads``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MALLOC = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


def images(n: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _cpu_done() -> None:
    """On the CPU the work is done when the call returns: nothing to wait for."""


def run_dualconv(batch: int, steps: int, device: str = "cpu") -> float:
    import dualconv as dc
    from dualconv.models import lenet
    X, y = images(batch * steps)
    model = lenet(seed=0)
    sync = _cpu_done
    if device == "cuda":
        import cupy
        model.to("cupy")
        X, y = cupy.asarray(X), cupy.asarray(y)
        sync = cupy.cuda.Device().synchronize
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                         dc.SGD(model.parameters(), lr=0.01, momentum=0.9), progress=False)
    trainer.fit(X[:batch * 5], y[:batch * 5], epochs=1, batch_size=batch, shuffle=False)  # warm-up
    trainer.loss.check_labels = False  # as inside fit: no label check (a GPU sync) per step
    sync()
    start = time.perf_counter()
    for i in range(steps):
        trainer.train_step(X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
    sync()
    return batch * steps / (time.perf_counter() - start)


def run_torch(batch: int, steps: int, device: str = "cpu") -> float:
    import torch
    from torch import nn
    X, y = images(batch * steps)
    X, y = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if device == "cuda" else _cpu_done
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(400, 84), nn.ReLU(), nn.Linear(84, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step(i: int) -> None:
        opt.zero_grad()
        loss = loss_fn(model(X[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch])
        loss.backward()
        opt.step()

    for i in range(5):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    sync()
    return batch * steps / (time.perf_counter() - start)


def worker(impl: str, batch: int, threads: int, blas_threads: int | None, device: str) -> None:
    steps = max(20, 8192 // batch)
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
        rate = run_torch(batch, steps, device)
    else:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=blas_threads or threads, user_api="blas"):
            rate = run_dualconv(batch, steps, device)
    print(json.dumps({"impl": impl, "batch": batch, "images_per_second": rate}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dualconv-blas-threads", type=int, default=None)
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.threads, args.dualconv_blas_threads,
               args.device)
        return
    try:
        import torch  # noqa: F401
        impls = ["dualconv", "torch"]
    except ImportError:
        impls = ["dualconv"]
        print("PyTorch is not installed: no peer to compare against")
    env = dict(os.environ, GLIBC_TUNABLES=MALLOC, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.cycles):
        for batch in args.batch_sizes:
            for impl in impls:
                blas = ["--dualconv-blas-threads", str(args.dualconv_blas_threads)] if args.dualconv_blas_threads else []
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), *blas,
                                      "--device", args.device,
                                      "--worker", impl, str(batch)],
                                     env=env, check=True, capture_output=True, text=True).stdout
                rates.setdefault((impl, batch), []).append(json.loads(out.splitlines()[-1])["images_per_second"])
    print(f"{'batch':>5}  {'dualconv img/s':>15}  {'torch img/s':>12}  {'ratio':>6}")
    for batch in args.batch_sizes:
        ours = statistics.median(rates[("dualconv", batch)])
        if "torch" in impls:
            theirs = statistics.median(rates[("torch", batch)])
            print(f"{batch:>5}  {ours:>15.0f}  {theirs:>12.0f}  {ours / theirs:>6.2f}")
        else:
            print(f"{batch:>5}  {ours:>15.0f}")


if __name__ == "__main__":
    main()
