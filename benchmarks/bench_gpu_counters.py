"""The GPU step's work per LeNet training step, counted by the emulated CuPy.

Runs on every machine (no GPU needed; g++ builds the kernels): see
gpu_counters.py for what is counted and the goals. Each figure is a
``track_`` benchmark, so a change in launches, copies or syncs shows in asv's
history like a change in speed does.
"""
from __future__ import annotations

from typing import Any

from .gpu_counters import evaluate_syncs, fit_step_counters, step_counters


class GpuStepCounters:
    """LeNet on MNIST-shaped data resident on the emulated device."""

    timeout = 900

    def setup_cache(self) -> dict[str, Any]:
        return {"sgd-64": step_counters("sgd-momentum", 64),
                "adam-64": step_counters("adam", 64),
                "sgd-256": step_counters("sgd-momentum", 256),
                "fit-sgd-64": fit_step_counters("sgd-momentum", 64),
                "fit-adam-64": fit_step_counters("adam", 64),
                "evaluate_syncs": evaluate_syncs(4, 64)}

    def track_launches_sgd_momentum_step(self, counted: dict[str, Any]) -> float:
        """Kernel launches per SGD-momentum step, batch 64 (goal <= 64)."""
        return counted["sgd-64"]["kernel_launches"]

    def track_launches_adam_step(self, counted: dict[str, Any]) -> float:
        """Kernel launches per Adam step, batch 64 (goal <= 72)."""
        return counted["adam-64"]["kernel_launches"]

    def track_launches_sgd_momentum_fit_step(self, counted: dict[str, Any]) -> float:
        """Kernel launches per SGD-momentum step inside Trainer.fit, batch 64 (goal <= 64)."""
        return counted["fit-sgd-64"]["kernel_launches"]

    def track_launches_adam_fit_step(self, counted: dict[str, Any]) -> float:
        """Kernel launches per Adam step inside Trainer.fit, batch 64 (goal <= 72)."""
        return counted["fit-adam-64"]["kernel_launches"]

    def track_copy_bytes_fit_step(self, counted: dict[str, Any]) -> float:
        """Device-to-device copy bytes per step inside Trainer.fit, SGD momentum plus Adam, batch 64."""
        return counted["fit-sgd-64"]["copy_bytes"] + counted["fit-adam-64"]["copy_bytes"]

    def track_copy_bytes_step_batch_256(self, counted: dict[str, Any]) -> float:
        """Device-to-device copy bytes per SGD-momentum step, batch 256 (goal <= 1 MB)."""
        return counted["sgd-256"]["copy_bytes"]

    def track_syncs_and_transfers_per_step(self, counted: dict[str, Any]) -> float:
        """Syncs plus host transfers per step, every configuration (goal 0)."""
        return sum(c["syncs"] + c["host_to_device"] + c["device_to_host"]
                   for key, c in counted.items() if key != "evaluate_syncs")

    def track_evaluate_syncs_4_batches(self, counted: dict[str, Any]) -> float:
        """Syncs of one Trainer.evaluate over 4 resident batches (not one per batch)."""
        return counted["evaluate_syncs"]

    track_launches_sgd_momentum_step.unit = "launches"
    track_launches_adam_step.unit = "launches"
    track_launches_sgd_momentum_fit_step.unit = "launches"
    track_launches_adam_fit_step.unit = "launches"
    track_copy_bytes_fit_step.unit = "bytes"
    track_copy_bytes_step_batch_256.unit = "bytes"
    track_syncs_and_transfers_per_step.unit = "count"
    track_evaluate_syncs_4_batches.unit = "syncs"
