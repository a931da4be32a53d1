"""fit's divergence guard keeps BatchNorm's running statistics on the CuPy backend
too (tests/test_divergence_buffers.py), with masked copies on the device: no sync,
and one launch per buffer plus one comparison with the verdict per step."""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc
from test_divergence import assert_same_state
from test_divergence_buffers import BATCH, X, Y, bn_trainer, failed_and_reference
from test_gpu_step_budget import _counted_fit_step

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("log_every", [1, 20])
def test_a_nan_image_on_the_gpu_leaves_the_running_statistics_of_the_last_finite_step(optimizer, log_every):
    with dc.use_backend("cupy"):
        failed, reference = failed_and_reference(optimizer, log_every, bad_step=3)
        assert failed.model.backend == reference.model.backend == "cupy"
        for name, (layer, key) in failed.model.buffers().items():
            assert np.isfinite(dc.backend.asnumpy(layer.buffers[key])).all(), name
        assert_same_state(failed, reference)
        assert np.isfinite(failed.evaluate(X, Y)["loss"])


def test_the_buffer_copies_cost_one_launch_per_buffer_and_one_comparison_per_step(emu):
    """The guard's share of a LeNet-BN step inside fit, against the same fits with
    the buffer copies left out (the guard then sees no buffer)."""
    def per_step(copy_buffers: bool) -> dict[str, float]:
        with dc.use_backend("cupy"):
            trainer = bn_trainer("sgd")
            if not copy_buffers:
                trainer.model.buffers = dict
            Xd, Yd = emu.cupy.asarray(X), emu.cupy.asarray(Y)
            batches = [(Xd[i * BATCH:(i + 1) * BATCH], Yd[i * BATCH:(i + 1) * BATCH]) for i in range(4)]
            return _counted_fit_step(emu, trainer, batches)

    with_copies, without = per_step(True), per_step(False)
    assert with_copies["syncs"] == with_copies["device_to_host"] == with_copies["host_to_device"] == 0
    assert with_copies["kernel_launches"] - without["kernel_launches"] == 1 + 6  # six buffers
