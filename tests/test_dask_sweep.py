"""A scikit-learn sweep on Dask: GridSearchCV of CNNClassifier under joblib's "dask" backend
gives exactly what the same search gives run sequentially, and dualconv's CPU engine works
inside a Dask worker process.

The cluster is local (two worker processes, one thread each), started once for the module
and closed after it; the fits travel as pickled estimators, as they would to a real
cluster (``Client("tcp://scheduler:8786")``). Dask's worker processes are daemonic by
default, and a daemonic process may not have children, so the engine runs its second core
on a thread there (``dualconv.engine.workers.available()`` is False); with
``distributed.worker.daemon`` off it forks its worker process as anywhere else. Either way
a batch splits into the same parts, so the results are the same bits.
"""
from __future__ import annotations

import multiprocessing
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import dualconv as dc
from dualconv.datasets import load_digits_dataset
from dualconv.engine import num_threads, worker_kind, workers
from dualconv.engine.passes import split
from dualconv.sklearn import CNNClassifier

distributed = pytest.importorskip("dask.distributed")
joblib = pytest.importorskip("joblib")

GRID = {"lr": [1e-3, 1e-2], "optimizer": ["adam", "sgd"]}

# dashboard_address=None turns the dashboard off, but the scheduler still serves HTTP on
# 8787, or on a free port (with this warning) while a cluster closed just before holds it.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use")


def _digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    (X, y), _ = load_digits_dataset()
    return X[:n], y[:n]


@pytest.fixture(scope="module")
def client(request):
    """A local cluster of two worker processes, daemonic as ``request.param`` says, and a
    client on it; closed after the module's tests that use it."""
    import dask
    import os
    before = os.environ.get("OMP_NUM_THREADS")
    with dask.config.set({"distributed.worker.daemon": request.param}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    # the cluster sets OMP_NUM_THREADS=1 here too (for the workers it starts): the tests that
    # follow must see this process's environment as it was
    if before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before
    try:
        with distributed.Client(cluster) as dask_client:
            yield dask_client, request.param
    finally:
        cluster.close()


def _search(n_jobs: int) -> Any:
    from sklearn.model_selection import GridSearchCV
    X, y = _digits(400)
    estimator = CNNClassifier(epochs=2, batch_size=32, random_state=0)
    return GridSearchCV(estimator, GRID, cv=2, n_jobs=n_jobs).fit(X, y)


@pytest.mark.parametrize("client", [True], ids=["daemonic-workers"], indirect=True)
def test_grid_search_on_dask_equals_the_sequential_search(client):
    dask_client, _ = client
    with distributed.get_task_stream(client=dask_client) as tasks, joblib.parallel_config(backend="dask"):
        on_dask = _search(n_jobs=-1)
    assert tasks.data, "no task ran on the cluster"  # the fits ran on Dask's workers
    sequential = _search(n_jobs=1)
    assert on_dask.best_params_ == sequential.best_params_
    assert on_dask.best_score_ == sequential.best_score_
    assert_array_equal(on_dask.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])
    X, _ = _digits(50)
    assert_array_equal(on_dask.predict_proba(X), sequential.predict_proba(X))


def _engine_step(threads: int | None) -> dict[str, Any]:
    """One training step of weidman on a batch the engine splits, in this process, on
    ``threads`` cores (None: the default here): the engine's settings, the outputs and the
    gradients."""
    dc.set_num_threads(threads)
    try:
        return _step()
    finally:
        dc.set_num_threads(None)


def _step() -> dict[str, Any]:
    X, y = _digits(256)
    model = dc.models.weidman(seed=0)
    model.build((1, 1, 8, 8))
    model.seed_randomness(1)
    out = model.forward(X)
    loss = dc.SoftmaxCrossEntropy()
    loss.forward(out, y)
    model.backward(loss.backward())
    return {"daemon": multiprocessing.current_process().daemon, "available": workers.available(),
            "kind": worker_kind(), "threads": num_threads(), "parts": len(split(model.layers, X)),
            "out": out, "grads": {f"{i}.{k}": g for i, la in enumerate(model.layers) for k, g in la.grads.items()}}


@pytest.mark.parametrize("client", [True, False], ids=["daemonic-workers", "non-daemonic-workers"],
                         indirect=True)
def test_the_cpu_engine_in_a_dask_worker_gives_the_same_bits(client):
    """By default a Dask worker's engine takes the one core Dask leaves it (OMP_NUM_THREADS=1,
    or a daemonic process); given two, it uses them, on threads in a daemonic worker and
    with a worker process of its own otherwise. Every way, the main process's bits."""
    dask_client, daemonic = client
    here = _engine_step(2)
    assert here["kind"] == "processes" and here["parts"] > 1 and here["threads"] == 2
    by_default = dask_client.submit(_engine_step, None, pure=False).result()
    given_two = dask_client.submit(_engine_step, 2, pure=False).result()
    assert by_default["threads"] == 1 and given_two["threads"] == 2
    for there in (by_default, given_two):
        assert there["daemon"] == daemonic and there["available"] == (not daemonic)
        assert there["kind"] == ("threads" if daemonic else "processes")
        assert there["parts"] == here["parts"]
        assert_array_equal(there["out"], here["out"])
        assert here["grads"].keys() == there["grads"].keys()
        for name, grad in here["grads"].items():
            assert_array_equal(there["grads"][name], grad, err_msg=name)
