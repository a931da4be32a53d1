"""Every GPU benchmark in one command, for a machine with a GPU.

    python benchmarks/gpu_suite.py [--quick]

Needs CuPy (``pip install -e ".[gpu,bench]"``) and PyTorch with CUDA. Runs, in order:

1. the asv suite's GPU benchmarks (backends cupy and torch-cuda, so every
   dualconv figure has its PyTorch + cuDNN peer from the same run) and the
   emulated step counters, against this environment, results saved under
   benchmarks/results for the current commit;
2. LeNet training images/s, dualconv on CuPy against PyTorch with cuDNN,
   same run (lenet_vs_torch.py --device cuda);
3. the SASS report of the compiled kernels (sass_report.py).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPU_BENCHMARKS = ["'(cupy|torch-cuda)'", "GpuStepCounters"]
"""asv --bench regexes: parameter sets naming a GPU backend, and the step counters."""


def commands(quick: bool) -> list[list[str]]:
    asv = [sys.executable, "-m", "asv"]
    bench = [arg for regex in GPU_BENCHMARKS for arg in ("--bench", regex)]
    return [
        [*asv, "machine", "--yes"],
        [*asv, "run", "--python=same", "--set-commit-hash=HEAD", "--show-stderr",
         *(["--quick"] if quick else []), *bench],
        [sys.executable, str(HERE / "lenet_vs_torch.py"), "--device", "cuda",
         *(["--cycles", "1"] if quick else [])],
        [sys.executable, str(HERE / "sass_report.py")],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat each (a smoke run)")
    args = parser.parse_args()
    for cmd in commands(args.quick):
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=HERE.parent, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
