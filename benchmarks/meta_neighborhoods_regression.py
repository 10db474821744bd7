"""Meta-Neighborhoods regression (the paper's Table 2 protocol): test MSE against the vanilla network.

Protocol (Shan & Oliva, "Regression" section): features standardised on the training rows, targets
standardised internally (the MSE is reported on the standardised scale, as the paper's figures are);
the output network is 3 dense layers of 128 (ReLU); AdamW, learning rate 1e-3, batch 128; training
stops when the validation R^2 (equivalently the validation MSE) has not improved for 10 epochs (10% of
the training rows held out, best weights kept), at most ``MAX_EPOCHS`` epochs. Meta-Neighborhoods
adds a dictionary of S = 1000 entries in input space, gamma = 10, one inner step with a learnable
scalar rate, second order. *vanilla* is the same estimator with ``n_inner_steps=0``: the same network
and training, no dictionary. Weight decay is 0 for both (the paper chose it per dataset; we did not
search it).

Data: gom (1059 x 116, two targets: latitude and longitude) with 5-fold cross-validation as in the
paper; protein, elevators and pol (stand-ins for the paper's unavailable sets) with their 10 fixed
90/10 splits, or the first 3 under ``--quick``. ``summary``: ``<dataset>.vanilla_mse``,
``<dataset>.mn_mse`` (means over splits) with ``_std``, ``<dataset>.mn_better`` (fraction of splits
where Meta-Neighborhoods has the lower MSE), ``fit_time_ratio`` (total fit seconds of
Meta-Neighborhoods over vanilla's, all splits) and ``epoch_time_ratio`` (the same per epoch, since
early stopping ends the two at different epochs). The paper's gom figures: vanilla 0.5949 +- 0.0515,
Meta-Neighborhoods 0.5681 +- 0.0563.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

DATASETS = ("gom", "protein", "elevators", "pol")
MAX_EPOCHS = 300
METHODS = {"vanilla": {"n_inner_steps": 0}, "mn": {"n_inner_steps": 1}}


def _estimator(seed: int, **params):
    from sksemiparam import MetaNeighborhoodsRegressor

    base = {
        "n_entries": 1000,
        "gamma": 10.0,
        "head_layer_sizes": (128, 128, 128),
        "learning_rate": 1e-3,
        "batch_size": 128,
        "early_stopping": True,
        "validation_fraction": 0.1,
        "n_iter_no_change": 10,
        "tol": 0.0,
        "max_epochs": MAX_EPOCHS,
        "device": "cpu",
        "random_state": seed,
    }
    return MetaNeighborhoodsRegressor(**{**base, **params})


def _splits(name: str, data_dir: str | None, quick: bool):
    """(split id, X_train, X_test, y_train, y_test) for the dataset's protocol."""
    from sklearn.model_selection import KFold

    from sksemiparam.datasets import load_uci

    if name == "gom":
        X, y = load_uci("gom", data_dir)
        for k, (train, test) in enumerate(KFold(5, shuffle=True, random_state=0).split(X)):
            yield k, X[train], X[test], y[train], y[test]
        return
    for k in range(3 if quick else 10):
        X_train, X_test, y_train, y_test = load_uci(name, data_dir, split=k)
        yield k, X_train, X_test, y_train, y_test


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Test MSE, fit time and epochs of vanilla and Meta-Neighborhoods on every split."""
    from sklearn.preprocessing import StandardScaler

    rows: list[dict[str, Any]] = []
    for name in DATASETS:
        for k, X_train, X_test, y_train, y_test in _splits(name, data_dir, quick):
            scaler = StandardScaler().fit(X_train)
            X_train = scaler.transform(X_train).astype(np.float32)
            X_test = scaler.transform(X_test).astype(np.float32)
            y_std = y_train.std(0)
            for method, params in METHODS.items():
                model = _estimator(k, **params)
                start = time.perf_counter()
                model.fit(X_train, y_train)
                seconds = time.perf_counter() - start
                pred = model.predict(X_test)
                mse = float(np.mean(((pred - y_test) / y_std) ** 2))  # on the standardised scale
                rows.append(
                    {
                        "dataset": name,
                        "split": k,
                        "method": method,
                        "n_train": int(X_train.shape[0]),
                        "n_test": int(X_test.shape[0]),
                        "test_mse": round(mse, 5),
                        "fit_seconds": round(seconds, 2),
                        "epochs": int(model.n_iter_),
                        "seconds_per_epoch": round(seconds / model.n_iter_, 4),
                        "best_validation_r2": round(float(model.best_validation_score_), 5),
                    }
                )
                print(
                    f"  {name} split {k} {method:<7} MSE {mse:.4f} {model.n_iter_:3d} epochs {seconds:.1f} s",
                    flush=True,
                )
    return {"results": rows, "summary": _summary(rows)}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in DATASETS:
        mse = {
            m: np.array([r["test_mse"] for r in rows if r["dataset"] == name and r["method"] == m])
            for m in METHODS
        }
        if not len(mse["mn"]):
            continue
        for m in METHODS:
            summary[f"{name}.{m}_mse"] = round(float(mse[m].mean()), 4)
            summary[f"{name}.{m}_mse_std"] = round(float(mse[m].std()), 4)
        summary[f"{name}.mn_better"] = round(float(np.mean(mse["mn"] < mse["vanilla"])), 2)
        summary[f"{name}.n_splits"] = len(mse["mn"])

    def total(method, key):
        return sum(r[key] for r in rows if r["method"] == method)

    summary["fit_time_ratio"] = round(total("mn", "fit_seconds") / total("vanilla", "fit_seconds"), 2)
    per_epoch = {m: np.mean([r["seconds_per_epoch"] for r in rows if r["method"] == m]) for m in METHODS}
    summary["epoch_time_ratio"] = round(float(per_epoch["mn"] / per_epoch["vanilla"]), 2)
    summary["paper.gom.vanilla_mse"] = 0.5949
    summary["paper.gom.mn_mse"] = 0.5681
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """Test MSE per split, vanilla against Meta-Neighborhoods, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    names = [n for n in DATASETS if any(r["dataset"] == n for r in rows)]
    fig, axes = plt.subplots(
        1, len(names), figsize=(4 * len(names), 4), constrained_layout=True, squeeze=False
    )
    for ax, name in zip(axes[0], names):
        van = [r["test_mse"] for r in rows if r["dataset"] == name and r["method"] == "vanilla"]
        mn = [r["test_mse"] for r in rows if r["dataset"] == name and r["method"] == "mn"]
        ax.scatter(van, mn, color="C0")
        low, high = min(van + mn), max(van + mn)
        pad = 0.05 * (high - low + 1e-9)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], "k--", lw=0.8)
        ax.set_xlabel("vanilla test MSE")
        ax.set_ylabel("Meta-Neighborhoods test MSE")
        s = report["summary"]
        ax.set_title(
            f"{name}: {s[f'{name}.vanilla_mse']:.4f} -> {s[f'{name}.mn_mse']:.4f}\n"
            f"(below the line: MN better; {len(mn)} splits)",
            fontsize=10,
        )
    ratio = report["summary"]["fit_time_ratio"]
    fig.suptitle(f"Meta-Neighborhoods vs vanilla (standardised MSE); fit time ratio {ratio}x")
    fig.savefig(path, dpi=100)
    plt.close(fig)
