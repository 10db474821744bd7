"""A grid search over an sksemiparam estimator runs on a Dask cluster and finds what ``n_jobs=1`` finds.

The cluster is a ``LocalCluster`` of two worker processes with one thread each, as a small real
cluster would be: the estimator is pickled to other processes, which import sksemiparam and torch
themselves. Starting it, the workers' first torch import and closing it take ~10-20 s of this
test's time on a loaded 2-core machine; the 12 fits themselves take about a second.
"""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import sksemiparam
from sksemiparam import SemiparametricClassifier

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

GRID = {"tau": [1.0, 4.0], "embedding_dim": [4, 16]}


def _search(**params):
    X, y = make_classification(n_samples=120, n_features=8, n_informative=5, random_state=0)
    estimator = SemiparametricClassifier(
        hidden_layer_sizes=(16,), max_epochs=3, index="exact", device="cpu", random_state=0, **params
    )
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    return GridSearchCV(estimator, GRID, cv=cv), X.astype(np.float32), y


def _worker_info():
    import os

    import torch

    import sksemiparam

    return sksemiparam.__file__, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_grid_search_on_a_local_dask_cluster_equals_n_jobs_1():
    # One torch thread, as in the workers: torch's sums depend on the thread count, so a model
    # trained with two threads can differ in the last bits (and, after training, in a prediction).
    serial, X, y = _search(num_threads=1)
    serial.set_params(n_jobs=1).fit(X, y)

    on_dask, _, _ = _search()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        info = client.run(_worker_info)
        with joblib.parallel_backend("dask"):
            on_dask.fit(X, y)
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)

    assert len(info) == 2
    for worker_file, threads, omp in info.values():
        # The workers imported this sksemiparam (an editable install or PYTHONPATH reaches them),
        # and torch there has the one thread the nanny gives each worker: nothing had to set it.
        assert worker_file == sksemiparam.__file__
        assert threads == 1 and omp == "1"
    # The fits ran in the workers (joblib batches them into tasks), on both of them.
    assert all(n > 0 for n in executed.values()), executed

    splits = [f"split{i}_test_score" for i in range(3)] + ["mean_test_score", "rank_test_score"]
    for key in splits:
        np.testing.assert_array_equal(on_dask.cv_results_[key], serial.cv_results_[key], err_msg=key)
    assert on_dask.best_params_ == serial.best_params_
    np.testing.assert_array_equal(on_dask.predict(X), serial.predict(X))
