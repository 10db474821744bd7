"""Grid search wall time: one process, joblib's loky with 2 workers, and Dask clusters of 2 workers.

A ``GridSearchCV`` of 12 candidates (``tau`` in {0.5, 1, 2, 4} x ``embedding_dim`` in {16, 32,
64}) x 3 folds = 36 fits of a ``SemiparametricClassifier`` (784-128-d MLP, 5 epochs; 3 under
``--quick``) on 10,000 MNIST training images (2,000 under ``--quick``), ``refit=False``. It runs
five ways, each in a fresh pool: ``n_jobs=1`` with torch's default threads (what a user gets),
``n_jobs=1`` with ``num_threads=1`` (one torch thread, as in every worker below), ``n_jobs=2``
(joblib's loky backend, which limits each worker to cpu_count / n_jobs threads), and joblib's
``"dask"`` backend on a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
twice: with Dask's default worker environment, and with ``MALLOC_TRIM_THRESHOLD_`` unset.
Dask exports ``MALLOC_TRIM_THRESHOLD_=65536`` to its workers to hand freed memory back to the
system; setting it also fixes glibc's mmap threshold at 128 KiB, so a training step's larger
buffers are mapped and unmapped every time (a single-process fit here was 1.4-1.5x slower with
the variable set).

An untimed fit warms this process up first. The cluster's start-up is timed apart from the
search; the loky workers start inside the timed search, the Dask workers import torch inside
it. ``summary.dask_speedup`` (Dask with the variable unset, as the docs recommend; the default
environment's figure is ``dask_speedup_dask_default_environment``) and ``summary.loky_speedup``
divide the time of ``n_jobs=1`` (default threads) by theirs; the ``*_vs_one_thread`` figures
divide that of one torch thread. All must choose the same ``best_params_``; the one-thread runs
must give identical scores (torch's sums depend on the thread count, so the default-threads run
may differ in the last bits).

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


def _malloc_trim_threshold() -> str | None:
    """MALLOC_TRIM_THRESHOLD_ in the process that runs this (a Dask worker)."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


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
    import dask
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

    def on_dask(name, environ):
        # Dask's nannies export distributed.nanny.pre-spawn-environ to each worker process before it
        # starts; None leaves a variable out (glibc reads MALLOC_* once, at start-up). A LocalCluster's
        # nannies run in this process and also write the variables into its os.environ, which later
        # workers inherit: an unset variable is removed here for the cluster's start-up.
        saved = {k: os.environ.get(k) for k in environ}
        for k, v in environ.items():
            if v is None:
                os.environ.pop(k, None)
        try:
            with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}):
                start = time.perf_counter()
                cluster = LocalCluster(
                    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
                )
                client = Client(cluster)
                start_seconds = time.perf_counter() - start
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        try:
            with joblib.parallel_backend("dask"):
                search, seconds = _search(X, y, epochs=epochs)
            threads = sorted(set(client.run(_torch_threads).values()))
            trim = sorted(set(client.run(_malloc_trim_threshold).values()), key=str)
        finally:
            client.close()
            cluster.close()
        record(
            name,
            search,
            seconds,
            2,
            threads[0] if len(threads) == 1 else threads,
            cluster_start_seconds=round(start_seconds, 2),
            worker_malloc_trim_threshold=trim[0] if len(trim) == 1 else trim,
        )

    # Dask's default: MALLOC_TRIM_THRESHOLD_=65536 in every worker, which also freezes glibc's mmap
    # threshold at 128 KiB, so every activation buffer of a training step is mmap'ed and unmapped.
    on_dask("dask 2 workers", {})
    on_dask("dask 2 workers, malloc defaults", {"MALLOC_TRIM_THRESHOLD_": None})

    serial = rows[0]["seconds"]
    one_thread = rows[1]["seconds"]
    loky, dask_default, dask_tuned = (rows[i]["seconds"] for i in (2, 3, 4))
    best = [r["best_params"] for r in rows]
    scores = {name: s.cv_results_["mean_test_score"] for name, s in searches.items()}
    reference = scores["n_jobs=1, num_threads=1"]
    summary = {
        # with the worker environment this library's docs recommend (MALLOC_TRIM_THRESHOLD_ unset)
        "dask_speedup": round(serial / dask_tuned, 2),
        "dask_speedup_dask_default_environment": round(serial / dask_default, 2),
        "loky_speedup": round(serial / loky, 2),
        "dask_speedup_vs_one_thread": round(one_thread / dask_tuned, 2),
        "loky_speedup_vs_one_thread": round(one_thread / loky, 2),
        "malloc_trim_slowdown": round(dask_default / dask_tuned, 2),
        "dask_cluster_start_seconds": rows[4]["cluster_start_seconds"],
        "same_best_params": all(b == best[0] for b in best),
        "best_params": best[0],
        "identical_scores_one_thread_loky_dask": bool(
            np.array_equal(scores["loky n_jobs=2"], reference)
            and np.array_equal(scores["dask 2 workers"], reference)
            and np.array_equal(scores["dask 2 workers, malloc defaults"], reference)
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
    fig, ax = plt.subplots(figsize=(8.5, 4), constrained_layout=True)
    bars = ax.bar(names, seconds, color=["C0", "C7", "C2", "C1", "C3"][: len(names)])
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
