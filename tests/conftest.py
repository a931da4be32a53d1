"""Test-wide settings.

BLAS runs single-threaded in the tests (and in the subprocesses they start):
LeNet's GEMMs are small, and on a busy 2-core machine OpenBLAS's spinning
threads made training steps up to 20x slower. Results do not depend on it;
the suite's run time does.
"""
import os

from threadpoolctl import threadpool_limits

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
threadpool_limits(limits=1, user_api="blas")
