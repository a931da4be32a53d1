"""Runs every kernel on a few cases through the AddressSanitizer build of the
emulation harness; run by test_cuda_asan.py in a subprocess with libasan
LD_PRELOADed. Usage: asan_driver.py LIB [--overflow]

--overflow launches im2col with a plan for a taller image than the one passed,
a deliberate out-of-bounds read that ASan must report (the negative control).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from cuda_emulator import Emulator
from dualconv.kernels import checks_step, cpu, cuda_plans, cuda_step_plans
from dualconv.shapes import Window
from kernel_cases import (ARGS, DTYPES, HAND_PICKED, assert_bitwise_equal, kernel_args,
                          random_cases)


def main() -> int:
    emulator = Emulator(Path(sys.argv[1]))
    if "--overflow" in sys.argv:
        x = np.ones((1, 1, 4, 4), np.float32)
        launch = cuda_plans.plan_im2col(np.ones((1, 1, 6, 4), np.float32), Window(3, 3, 1, 1, 0, 0))
        emulator.run(dataclasses.replace(launch, args=(x, *launch.args[1:])))
        print("overflow was not detected")
        return 0
    launches = 0
    for kernel in ARGS:
        for dtype in DTYPES:
            for i, case in enumerate(HAND_PICKED + random_cases(seed=7, count=4)):
                args = kernel_args(kernel, case, dtype, "ties", seed=i)
                assert_bitwise_equal(emulator.call(kernel, *args),
                                     getattr(cpu, kernel)(*args), f"{kernel} {case}")
                launches += 1
    launches += fused_runs(emulator)
    launches += step_runs(emulator)
    print(f"ok: {launches} launches, kernels {sorted(emulator.launched)}")
    return 0


def fused_runs(emulator: Emulator) -> int:
    """The fused kernels on sizes that leave a partial block; returns the launch count."""
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        w, g, m, v = (rng.standard_normal(257).astype(dtype) for _ in range(4))
        emulator.call("sgd_update", w, g, None, 0.1, 0.0, 0.01, False)
        emulator.call("sgd_update", w, g, m, 0.1, 0.9, 0.0, True)
        emulator.call("adam_update", w, g, m, np.abs(v), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
        emulator.call("softmax_cross_entropy", rng.standard_normal((257, 10)).astype(dtype),
                      rng.integers(-1, 11, 257))
        verdict = np.array([2**31 - 1], np.int32)
        last = [np.empty_like(w) for _ in range(3)]
        emulator.call("sgd_update_guarded", w, g, None, last[0], None, verdict, 2, 0.1, 0.0, 0.0,
                      False)
        emulator.call("sgd_update_guarded", w, g, m, last[0], last[1], verdict, 4, 0.1, 0.9, 0.0,
                      True)
        emulator.call("adam_update_guarded", w, g, m, np.abs(v), *last, verdict, 6, 1e-3, 0.9,
                      0.999, 1e-8, 0.0, 1)
        emulator.call("flag_nonfinite_loss", np.array(np.nan, dtype), verdict, 8)
        assert verdict[0] == 8, verdict
    return 8 * len(DTYPES)


def step_runs(emulator: Emulator) -> int:
    """A captured step's kernels (cuda_step_plans.py) on sizes that leave a partial block,
    each step's row the last of its tables; returns the launch count."""
    def run(kernel: str, *args):
        getattr(checks_step, kernel)(*args)
        return emulator.run(cuda_step_plans.PLANS[kernel](*args))

    rng = np.random.default_rng(6)
    for dtype in DTYPES:
        clock = np.array([4], np.int32)
        rates, ints = np.empty(3, dtype), np.empty(4, np.int32)
        run("step_begin", clock, rng.random((5, 3)).astype(dtype), np.arange(20, dtype=np.int32).reshape(5, 4),
            rates, ints)
        X, y = rng.standard_normal((50, 3, 7)).astype(dtype), rng.integers(0, 9, 50)
        run("gather_rows", X, y, rng.permutation(50), np.array([2], np.int32), np.empty((16, 3, 7), dtype),
            np.empty(16, np.int64))
        w, g, m, v = (rng.standard_normal(257).astype(dtype) for _ in range(4))
        last = [np.empty_like(w) for _ in range(3)]
        verdict, code = np.array([2**31 - 1], np.int32), np.array([2], np.int32)
        run("sgd_update_guarded_at", w, g, m, last[0], last[1], verdict, code, rates[:1], 0.9, 0.0, True)
        run("adam_update_guarded_at", w, g, m, np.abs(v), *last, verdict, code, rates, 0.9, 0.999, 1e-8, 0.0)
        run("flag_nonfinite_loss_at", np.array(1.5, dtype), verdict, np.array([4], np.int32), code,
            np.empty(5, dtype))
        run("dropout_forward_at", rng.standard_normal((17, 15)).astype(dtype), ints[:2], 0.5, 0)
        run("gemm", rng.standard_normal((7, 33)).astype(dtype), rng.standard_normal((19, 33)).astype(dtype).T)
        parts = run("gemm", rng.standard_normal((3, 1100)).astype(dtype), rng.standard_normal((1100, 5)).astype(dtype))
        run("gemm_sum_parts", parts)
    return 9 * len(DTYPES)


if __name__ == "__main__":
    sys.exit(main())
