"""dualconv's own Python per GPU step and per custom launch, profiled on the emulated CuPy.

Runs on every machine (no GPU needed; g++ builds the kernels): see gpu_host_cost.py for
what is measured and how. Each figure is a ``track_`` benchmark, so a change in the
host's cost per launch shows in asv's history. They are cProfile self times: compare
them on one machine only.
"""
from __future__ import annotations

from typing import Any

from .gpu_host_cost import fit_step_cost, launch_cost


class GpuHostCost:
    """LeNet at batch 64 on MNIST-shaped data resident on the emulated device."""

    timeout = 900

    def setup_cache(self) -> dict[str, Any]:
        return {"step": fit_step_cost("sgd-momentum", 64, steps=32, no_op=True, repeats=3),
                "step_off_host": fit_step_cost("sgd-momentum", 64, steps=16, no_op=True, off_host=True),
                "step_kernels_run": fit_step_cost("sgd-momentum", 64, steps=16),
                "launch": launch_cost("sgd-momentum", 64, replays=20)}

    def track_own_python_per_fit_step(self, cost: dict[str, Any]) -> float:
        """dualconv's own Python per SGD-momentum step inside Trainer.fit, the custom
        kernels made no-ops as on a GPU (goal <= 1000 us)."""
        return cost["step"]["seconds"] * 1e6

    def track_own_python_per_fit_step_off_host(self, cost: dict[str, Any]) -> float:
        """The same with the stand-in's ufuncs, products and reductions made no-ops too (no
        device work on this CPU, as on a GPU host)."""
        return cost["step_off_host"]["seconds"] * 1e6

    def track_own_python_per_fit_step_kernels_on_this_cpu(self, cost: dict[str, Any]) -> float:
        """The same with the stand-in's kernels run by this CPU (they evict the caches)."""
        return cost["step_kernels_run"]["seconds"] * 1e6

    def track_own_python_per_custom_launch(self, cost: dict[str, Any]) -> float:
        """dualconv's own Python per custom kernel launch, the kernels made no-ops (goal <= 10 us)."""
        return cost["launch"]["seconds"] * 1e6

    track_own_python_per_fit_step.unit = "us"
    track_own_python_per_fit_step_off_host.unit = "us"
    track_own_python_per_fit_step_kernels_on_this_cpu.unit = "us"
    track_own_python_per_custom_launch.unit = "us"
