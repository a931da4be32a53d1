"""Two `dualconv train` runs at once against one alone: together they should train at least
as fast (dualconv/engine/neighbours.py gives each its share of the cores).

    python benchmarks/concurrent_runs.py [--limit 60000] [--repeats 2]

Each run is `dualconv train --limit N --no-progress` into a temporary directory, with the
dataset from DUALCONV_DATA as the CLI finds it. Prints each run's images/s (the CLI's epoch
line) and the pair's sum over the run alone; the sum should be at least 1.0x.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

SPEED = re.compile(r"([\d,]+) img/s")


def _start(limit: int, out: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "dualconv.cli", "train", "--limit", str(limit), "--no-progress",
               "--out", out]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _speed(process: subprocess.Popen) -> float:
    output, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"dualconv train failed:\n{output}")
    found = SPEED.findall(output)
    if not found:
        raise SystemExit(f"no images/s in dualconv train's output:\n{output}")
    return float(found[-1].replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=60000, help="training images per run")
    parser.add_argument("--repeats", type=int, default=2, help="alone/together pairs measured")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="dualconv-concurrent-")
    try:
        for repeat in range(args.repeats):
            alone = _speed(_start(args.limit, os.path.join(root, f"alone{repeat}")))
            pair = [_start(args.limit, os.path.join(root, f"pair{repeat}-{k}")) for k in range(2)]
            speeds = [_speed(p) for p in pair]
            print(f"alone {alone:,.0f} img/s; two at once {speeds[0]:,.0f} + {speeds[1]:,.0f} = "
                  f"{sum(speeds):,.0f} img/s: {sum(speeds) / alone:.2f}x the run alone")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
