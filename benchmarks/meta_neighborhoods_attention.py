"""Meta-Neighborhoods with large dictionaries: full attention vs attention over the k nearest entries.

With ``n_neighbors=k`` each query attends only to the k dictionary entries nearest it (found through
the neighbour index without gradients, re-scored with autograd); with ``n_neighbors=None`` it attends
to all S entries, as in the paper. This measures what the restriction costs in accuracy and what it
saves in time, at S = 1000 and S = 10000.

Setting: ``MetaNeighborhoodsRegressor`` with the regression benchmark's network (3 x 128, gamma 10,
one second-order inner step, AdamW 1e-3, batch 128) on elevators, fixed split 0 (14,939 training and
1,660 test rows, features standardised on the training rows); a fixed budget of ``epochs`` epochs
(20, 8 under ``--quick``) with no early stopping, so every variant trains on the same number of
batches. Variants: ``s<S>.full`` and ``s<S>.k<k>`` for S in (1000, 10000) and k = 32, plus the
vanilla network (``n_inner_steps=0``) for reference. ``summary``: ``<variant>.mse`` (test MSE on the
standardised scale), ``<variant>.seconds_per_epoch``, ``<variant>.predict_seconds`` (the test set),
and ``s<S>.k<k>.epoch_time_ratio`` (k-nearest over full attention at the same S; below 1 means the
restriction is faster).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

K = 32


def _variants() -> dict[str, dict[str, Any]]:
    variants: dict[str, dict[str, Any]] = {"vanilla": {"n_inner_steps": 0, "n_entries": 1000}}
    for size in (1000, 10000):
        variants[f"s{size}.full"] = {"n_entries": size, "n_neighbors": None}
        variants[f"s{size}.k{K}"] = {"n_entries": size, "n_neighbors": K, "index": "exact"}
    return variants


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Test MSE and time per epoch of every variant."""
    from sklearn.preprocessing import StandardScaler

    from sksemiparam import MetaNeighborhoodsRegressor
    from sksemiparam.datasets import load_uci

    epochs = 8 if quick else 20
    X_train, X_test, y_train, y_test = load_uci("elevators", data_dir, split=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = (scaler.transform(X).astype(np.float32) for X in (X_train, X_test))
    y_std = y_train.std()
    rows, summary = [], {}
    for name, params in _variants().items():
        model = MetaNeighborhoodsRegressor(
            gamma=10.0, head_layer_sizes=(128, 128, 128), learning_rate=1e-3, batch_size=128,
            max_epochs=epochs, n_iter_no_change=epochs + 1, device="cpu", random_state=0, **params,
        )  # fmt: skip
        start = time.perf_counter()
        model.fit(X_train, y_train)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        pred = model.predict(X_test)
        predict_seconds = time.perf_counter() - start
        mse = float(np.mean(((pred - y_test) / y_std) ** 2))
        row = {
            "variant": name,
            "n_entries": params["n_entries"],
            "n_neighbors": params.get("n_neighbors"),
            "epochs": int(model.n_iter_),
            "test_mse": round(mse, 5),
            "fit_seconds": round(fit_seconds, 2),
            "seconds_per_epoch": round(fit_seconds / model.n_iter_, 3),
            "predict_seconds": round(predict_seconds, 3),
        }
        rows.append(row)
        summary[f"{name}.mse"] = row["test_mse"]
        summary[f"{name}.seconds_per_epoch"] = row["seconds_per_epoch"]
        summary[f"{name}.predict_seconds"] = row["predict_seconds"]
        seconds = row["seconds_per_epoch"]
        print(f"  {name:<11} MSE {mse:.4f} {seconds:.2f} s/epoch predict {predict_seconds:.2f} s", flush=True)
    for size in (1000, 10000):
        summary[f"s{size}.k{K}.epoch_time_ratio"] = round(
            summary[f"s{size}.k{K}.seconds_per_epoch"] / summary[f"s{size}.full.seconds_per_epoch"], 2
        )
    summary["epochs"] = epochs
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Test MSE against seconds per epoch, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    for row in report["results"]:
        ax.scatter(row["seconds_per_epoch"], row["test_mse"], s=30)
        ax.annotate(row["variant"], (row["seconds_per_epoch"], row["test_mse"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("seconds per epoch (log)")
    ax.set_ylabel("test MSE (standardised)")
    ax.set_title(f"elevators, {report['summary']['epochs']} epochs: full vs k={K} nearest-entry attention")
    fig.savefig(path, dpi=100)
    plt.close(fig)
