"""Training and inference throughput: dualconv against PyTorch, same run, on the CPU or the GPU.

    python benchmarks/lenet_vs_torch.py [--device cpu|cuda] [--models lenet weidman]
                                        [--batch-sizes 64 256] [--inference-batch 1000]
                                        [--cycles 3] [--threads 2]
                                        [--dualconv-blas-threads 1] [--dualconv-blas-coretype SkylakeX]
                                        [--json results.json]

--device cpu (default): dualconv's NumPy backend against PyTorch on the CPU.
--device cuda: dualconv's CuPy backend against PyTorch with cuDNN, the data
resident on the GPU for both, each side synchronized before the clock stops.

Models: ``lenet`` (dualconv.models.lenet) and ``weidman`` (the one-layer CNN of
dualconv.models.weidman), each against the same network in torch.nn. Tasks:
training steps (forward, loss, backward, SGD with momentum) at each batch size,
``train`` through ``Trainer.train_step`` and ``own`` through a user's own loop
(``model.forward``, ``loss.forward``, ``model.backward`` without the images' gradient,
``opt.step()``, as README.md writes it; PyTorch's row is its usual loop either way, which
computes no input gradient either), and inference, ``model.predict`` on ``--inference-batch`` images (PyTorch: one
forward of them under ``torch.inference_mode``).

Each (implementation, task, model, batch size) runs in its own fresh process,
cycled ``--cycles`` times so both sides see the same machine noise; the report
is the median images/s of each and their ratio. Both sides get the same thread
count (``--threads``: PyTorch's threads, dualconv's cores, DUALCONV_NUM_THREADS; with
1, no worker process) and the same glibc malloc settings. ``--dualconv-blas-threads``
gives NumPy's BLAS its own thread count (PyTorch keeps ``--threads``), and
``--dualconv-blas-coretype`` the kernels NumPy's OpenBLAS uses (OPENBLAS_CORETYPE,
read when NumPy loads it; the machine line names the kernels it picks by itself).
It picks its SkylakeX kernels on both kinds measured (the Xeon, and the EPYC of
family 25, model 17); an AMD VM of 2026-11-21 was recorded with its Haswell
kernels, without the small-matrix path dualconv's blocked products are sized for, and
``--dualconv-blas-coretype Haswell`` shows what that costs. The report starts with
the machine: its kind, CPU model, BLAS and the kernel the BLAS
chose (benchmarks/machine_info.py), and the load average before and after,
since the machines are shared. PyTorch is the peer: without it installed,
only dualconv's figures are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, for `benchmarks`
from benchmarks.common import warm_up  # noqa: E402
from benchmarks.machine_info import describe  # noqa: E402

MALLOC = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


def images(n: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _cpu_done() -> None:
    """On the CPU the work is done when the call returns: nothing to wait for."""


WARM_UP_SECONDS = 1.0
"""Both sides run at least this long (and 3 calls) before the clock starts: the report is
the steady state (benchmarks/common.py's warm_up says what warms up)."""


def timed(run, repeats: int, sync=_cpu_done) -> float:
    """Seconds for ``repeats`` calls of run(i), after WARM_UP_SECONDS of calls (3 at least);
    ``sync`` waits for the device."""
    warm_up(run, sync, WARM_UP_SECONDS)
    start = time.perf_counter()
    for i in range(repeats):
        run(i)
    sync()
    return time.perf_counter() - start


def run_dualconv(task: str, name: str, batch: int, repeats: int, device: str = "cpu") -> float:
    import dualconv as dc
    from dualconv import models
    model = getattr(models, name)(seed=0)
    move, sync = (lambda a: a), _cpu_done
    if device == "cuda":
        import cupy
        model.to("cupy")
        move, sync = cupy.asarray, cupy.cuda.Device().synchronize
    if task == "predict":
        X = move(images(batch)[0])
        return batch * repeats / timed(lambda i: model.predict(X), repeats, sync)
    X, y = (move(a) for a in images(batch * repeats))
    trainer = dc.Trainer(model, dc.SoftmaxCrossEntropy(),
                         dc.SGD(model.parameters(), lr=0.01, momentum=0.9), progress=False)
    trainer.loss.check_labels = False  # as Trainer.fit does: no label check (a GPU sync) per step
    batches = [(X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(repeats)]
    if task == "own":
        loss, opt = trainer.loss, trainer.optimizer

        def own_step(i: int) -> None:  # a user's own loop, as README.md writes it
            xb, yb = batches[i % repeats]
            loss.forward(model.forward(xb), yb)
            model.backward(loss.backward(), input_grad=False)  # as PyTorch: no input gradient
            opt.step()
        return batch * repeats / timed(own_step, repeats, sync)
    return batch * repeats / timed(lambda i: trainer.train_step(*batches[i % repeats]), repeats, sync)


def run_torch(task: str, name: str, batch: int, repeats: int, device: str = "cpu") -> float:
    import torch
    from benchmarks.bench_training import torch_model
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if device == "cuda" else _cpu_done
    model = torch_model(name).to(device)
    if task == "predict":
        X = torch.from_numpy(images(batch)[0]).to(device)
        model.eval()

        def forward(i: int) -> None:
            with torch.inference_mode():
                model(X)
        return batch * repeats / timed(forward, repeats, sync)
    X, y = (torch.from_numpy(a).to(device) for a in images(batch * repeats))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(i: int) -> None:
        i %= repeats
        opt.zero_grad()
        loss = loss_fn(model(X[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch])
        loss.backward()
        opt.step()
    return batch * repeats / timed(step, repeats, sync)


def worker(impl: str, task: str, name: str, batch: int, threads: int, blas_threads: int | None,
           device: str) -> None:
    images_per_run = 5 * batch if task == "predict" else 8192
    repeats = max(5 if task == "predict" else 20, images_per_run // batch)
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
        rate = run_torch(task, name, batch, repeats, device)
    else:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=blas_threads or threads, user_api="blas"):
            rate = run_dualconv(task, name, batch, repeats, device)
    print(json.dumps({"images_per_second": rate}))


def header(args: argparse.Namespace, impls: list[str]) -> dict:
    import numpy
    info = {"machine": describe(), "numpy": numpy.__version__, "threads": args.threads,
            "dualconv_blas_threads": args.dualconv_blas_threads or args.threads,
            "dualconv_blas_coretype": args.dualconv_blas_coretype,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_before": os.getloadavg()[0]}
    if "torch" in impls:
        import torch
        info["torch"] = torch.__version__
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", nargs="+", default=["lenet", "weidman"], choices=["lenet", "weidman"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--tasks", nargs="+", default=["train", "own"], choices=["train", "own"],
                        help="training rows: Trainer.train_step, a user's own loop")
    parser.add_argument("--inference-batch", type=int, default=1000, help="0 skips inference")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2,
                        help="cores each side uses: PyTorch's threads, dualconv's parts and BLAS")
    parser.add_argument("--dualconv-blas-threads", type=int, default=None)
    parser.add_argument("--dualconv-blas-coretype", default=None,
                        help="OPENBLAS_CORETYPE for dualconv's processes (say SkylakeX or Haswell)")
    parser.add_argument("--json", help="also write the machine, settings and every rate to this file")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "TASK", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, task, name, batch = args.worker
        worker(impl, task, name, int(batch), args.threads, args.dualconv_blas_threads, args.device)
        return
    try:
        import torch  # noqa: F401
        impls = ["dualconv", "torch"]
    except ImportError:
        impls = ["dualconv"]
        print("PyTorch is not installed: no peer to compare against")
    info = header(args, impls)
    m = info["machine"]
    print(f"machine: {m['kind']}: {m['cpu']}, {m['num_cpu']} CPUs; BLAS {m['blas']}")
    print(f"numpy {info['numpy']}, torch {info.get('torch', '-')}; threads {args.threads}, "
          f"dualconv BLAS threads {info['dualconv_blas_threads']}; {info['date']}; "
          f"load average {info['loadavg_before']:.1f}", flush=True)
    if args.dualconv_blas_coretype:
        print(f"dualconv's OpenBLAS kernels: {args.dualconv_blas_coretype} (OPENBLAS_CORETYPE)", flush=True)
    cases = [(task, name, batch) for name in args.models for task in args.tasks for batch in args.batch_sizes]
    if args.inference_batch:
        cases += [("predict", name, args.inference_batch) for name in args.models]
    env = dict(os.environ, GLIBC_TUNABLES=MALLOC, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               DUALCONV_NUM_THREADS=str(args.threads))
    blas = ["--dualconv-blas-threads", str(args.dualconv_blas_threads)] if args.dualconv_blas_threads else []
    rates: dict[tuple[str, str, str, int], list[float]] = {}
    envs = {impl: env for impl in impls}
    if args.dualconv_blas_coretype:
        envs["dualconv"] = dict(env, OPENBLAS_CORETYPE=args.dualconv_blas_coretype)
    for _ in range(args.cycles):
        for task, name, batch in cases:
            for impl in impls:
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), *blas,
                                      "--device", args.device, "--worker", impl, task, name, str(batch)],
                                     env=envs[impl], check=True, capture_output=True, text=True).stdout
                rate = json.loads(out.splitlines()[-1])["images_per_second"]
                rates.setdefault((impl, task, name, batch), []).append(rate)
    info["loadavg_after"] = os.getloadavg()[0]
    print(f"load average after: {info['loadavg_after']:.1f}")
    print(f"{'model':>8}  {'task':>7}  {'batch':>5}  {'dualconv img/s':>15}  {'torch img/s':>12}  {'ratio':>6}")
    rows = []
    for task, name, batch in cases:
        ours = statistics.median(rates[("dualconv", task, name, batch)])
        row = {"model": name, "task": task, "batch": batch,
               "dualconv": rates[("dualconv", task, name, batch)]}
        if "torch" in impls:
            theirs = statistics.median(rates[("torch", task, name, batch)])
            row.update(torch=rates[("torch", task, name, batch)], ratio=ours / theirs)
            print(f"{name:>8}  {task:>7}  {batch:>5}  {ours:>15.0f}  {theirs:>12.0f}  {ours / theirs:>6.2f}")
        else:
            print(f"{name:>8}  {task:>7}  {batch:>5}  {ours:>15.0f}")
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
