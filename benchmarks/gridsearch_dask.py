"""Grid search wall time: one process, joblib's loky with 2 workers, and a Dask cluster of 2 workers.

A ``GridSearchCV`` of 12 candidates (``tau`` in {0.5, 1, 2, 4} x ``embedding_dim`` in {16, 32,
64}) x 3 folds = 36 fits of a ``SemiparametricClassifier`` (784-128-d MLP, 5 epochs; 3 under
``--quick``) on 10,000 MNIST training images (2,000 under ``--quick``), ``refit=False``. It runs
four ways, each in a fresh pool: ``n_jobs=1`` with torch's default threads (what a user gets),
``n_jobs=1`` with ``num_threads=1`` (one torch thread, as in every worker below), ``n_jobs=2``
(joblib's loky backend, which limits each worker to cpu_count / n_jobs threads), and joblib's
``"dask"`` backend on a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``.

An untimed fit warms this process up first. The cluster's start-up is timed apart from the
search; the loky workers start inside the timed search, the Dask workers import torch inside
it. ``summary.dask_speedup`` and ``summary.loky_speedup`` divide the time of ``n_jobs=1``
(default threads) by theirs; the ``*_vs_one_thread`` figures divide that of one torch thread.
All four must choose the same ``best_params_``; the three one-thread runs must give identical
scores (torch's sums depend on the thread count, so the default-threads run may differ in the
last bits).

The machine is shared: the load average before and after is in the report.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np

GRID = {"tau": [0.5, 1.0, 2.0, 4.0], "embedding_dim": [16, 32, 64]}
N_SPLITS = 3


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _search(X, y, *, epochs: int, n_jobs=None, num_threads=None):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from sksemiparam import SemiparametricClassifier

    estimator = SemiparametricClassifier(
        hidden_layer_sizes=(128,),
        max_epochs=epochs,
        batch_size=100,
        index="exact",
        device="cpu",
        num_threads=num_threads,
        random_state=0,
    )
    cv = StratifiedKFold(n_splits=N_SPLITS, shuffle=True, random_state=0)
    search = GridSearchCV(estimator, GRID, cv=cv, n_jobs=n_jobs, refit=False, error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # few epochs on purpose
        start = time.perf_counter()
        search.fit(X, y)
        return search, time.perf_counter() - start


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Wall time of the same search four ways, the speed-ups, and whether the results agree."""
    import joblib
    from distributed import Client, LocalCluster

    from sksemiparam.datasets import load_mnist

    n_train, epochs = (2000, 3) if quick else (10_000, 5)
    X, y = load_mnist(data_dir, subset="train")
    X, y = (X[:n_train] / 255.0).astype(np.float32), y[:n_train]
    n_fits = len(GRID["tau"]) * len(GRID["embedding_dim"]) * N_SPLITS
    # One fit first, untimed: this process's first fit pays one-off costs (lazy imports, torch's
    # start-up) that would otherwise count against n_jobs=1 only. Worker processes pay theirs
    # inside the timed searches: that is part of what a pool costs.
    _search(X[:300], y[:300], epochs=1, n_jobs=1)
    load_before = _load()
    rows, searches = [], {}

    def record(name, search, seconds, workers, worker_threads, **extra):
        searches[name] = search
        rows.append(
            {
                "backend": name,
                "workers": workers,
                "torch_threads_per_fit": worker_threads,
                "seconds": round(seconds, 2),
                "fits_per_s": round(n_fits / seconds, 3),
                "best_params": search.best_params_,
                "best_score": round(float(search.best_score_), 4),
                **extra,
            }
        )
        print(
            f"  {name:<22} {seconds:7.1f} s  best {search.best_params_} {search.best_score_:.4f}"
            f"  (load {_load()})",
            flush=True,
        )

    search, seconds = _search(X, y, epochs=epochs, n_jobs=1)
    record("n_jobs=1", search, seconds, 1, _torch_threads())
    search, seconds = _search(X, y, epochs=epochs, n_jobs=1, num_threads=1)
    record("n_jobs=1, num_threads=1", search, seconds, 1, 1)

    with joblib.parallel_backend("loky", n_jobs=2):
        search, seconds = _search(X, y, epochs=epochs)
        threads = sorted(set(joblib.Parallel()(joblib.delayed(_torch_threads)() for _ in range(4))))
    record("loky n_jobs=2", search, seconds, 2, threads[0] if len(threads) == 1 else threads)

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    start_seconds = time.perf_counter() - start
    try:
        with joblib.parallel_backend("dask"):
            search, seconds = _search(X, y, epochs=epochs)
        threads = sorted(set(client.run(_torch_threads).values()))
    finally:
        client.close()
        cluster.close()
    record(
        "dask 2 workers",
        search,
        seconds,
        2,
        threads[0] if len(threads) == 1 else threads,
        cluster_start_seconds=round(start_seconds, 2),
    )

    serial = rows[0]["seconds"]
    one_thread = rows[1]["seconds"]
    loky, dask = rows[2]["seconds"], rows[3]["seconds"]
    best = [r["best_params"] for r in rows]
    scores = {name: s.cv_results_["mean_test_score"] for name, s in searches.items()}
    reference = scores["n_jobs=1, num_threads=1"]
    summary = {
        "dask_speedup": round(serial / dask, 2),
        "loky_speedup": round(serial / loky, 2),
        "dask_speedup_vs_one_thread": round(one_thread / dask, 2),
        "loky_speedup_vs_one_thread": round(one_thread / loky, 2),
        "dask_cluster_start_seconds": round(start_seconds, 2),
        "same_best_params": all(b == best[0] for b in best),
        "best_params": best[0],
        "identical_scores_one_thread_loky_dask": bool(
            np.array_equal(scores["loky n_jobs=2"], reference)
            and np.array_equal(scores["dask 2 workers"], reference)
        ),
        "max_score_difference_default_threads": float(np.abs(scores["n_jobs=1"] - reference).max()),
        "n_candidates": len(searches["n_jobs=1"].cv_results_["params"]),
        "n_fits": n_fits,
        "n_train": n_train,
        "epochs": epochs,
        "load_average_1min_before": load_before,
        "load_average_1min_after": _load(),
    }
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Wall time of the search per backend, with the speed-up over ``n_jobs=1``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    names = [r["backend"].replace(", ", ",\n") for r in rows]
    seconds = [r["seconds"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    bars = ax.bar(names, seconds, color=["C0", "C7", "C2", "C1"])
    for bar, s in zip(bars, seconds):
        ax.annotate(
            f"{s:.0f} s\n{seconds[0] / s:.2f}x",
            (bar.get_x() + bar.get_width() / 2, s),
            ha="center",
            va="bottom",
        )
    ax.set_ylabel("wall time of the search (s)")
    ax.set_ylim(0, max(seconds) * 1.25)
    s = report["summary"]
    ax.set_title(
        f"GridSearchCV, {s['n_fits']} fits on {s['n_train']:,} MNIST images, {s['epochs']} epochs; "
        f"load {s['load_average_1min_before']}"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
