"""Test-wide settings.

BLAS runs single-threaded in the tests (and in the subprocesses they start):
LeNet's GEMMs are small, and on a busy 2-core machine OpenBLAS's spinning
threads made training steps up to 20x slower. Results do not depend on it;
the suite's run time does.

The engine shares the cores with other dualconv processes computing on the machine
(dualconv/engine/neighbours.py); in this process it looks in a directory of the test
run's own, so that a training run elsewhere never takes the cores a test counts on.
"""
import os
import tempfile

import pytest
from threadpoolctl import threadpool_limits

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
threadpool_limits(limits=1, user_api="blas")


@pytest.fixture(autouse=True, scope="session")
def _engine_alone():
    from dualconv.engine import neighbours

    with tempfile.TemporaryDirectory(prefix="dualconv-tests-") as own:
        original = neighbours.directory
        neighbours.directory = lambda: own
        neighbours._forget_after_fork()  # a file made in the shared directory is forgotten
        try:
            yield
        finally:
            neighbours.directory = original
            neighbours._forget_after_fork()
