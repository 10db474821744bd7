"""Meta-Neighborhoods classification (the paper's Table 1 columns): vanilla cosine classifier vs ft:1/3 + S/D.

Protocol, after Shan & Oliva's "Classification" section, scaled to 2 CPU cores: an encoder mu with no
ReLU after its last layer, a cosine-similarity output layer with a learnable scale, AdamW (learning
rate 1e-3, weight decay 7.5e-5, batch 128) for a fixed number of epochs (the paper: 400 with a
step decay; here 5 on Fashion-MNIST and 20 on the CIFAR subset, 2 and 5 under ``--quick``, no decay,
one seed: three inner steps over S = 1000 entries cost ~0.4 s per batch of 128 on one core, since
each query's adapted output layer is evaluated on every entry at every step). Meta-Neighborhoods
adds a dictionary of S = 1000 entries in feature space (values: logits, a class distribution each
after softmax; gamma = 5; cosine attention) and the auxiliary cosine classifier (lambda = 1);
second-order inner steps.

Methods (the paper's columns): ``vanilla`` (``n_inner_steps=0``, no auxiliary head: the cos-adamw
baseline), ``ft1_S``, ``ft1_D``, ``ft3_S``, ``ft3_D`` (1 or 3 inner steps, scalar or diagonal
inner rate).

Data: Fashion-MNIST, the official 60,000 / 10,000 split, encoder an MLP 784-256-64; the
4000-image CIFAR-10 subset, split 3,200 / 800 (stratified, seed 0), encoder the conv network
of ``embedding="conv"`` (the paper used DenseNet/ResNets on the full 50,000 images). ``summary``:
``<dataset>.<method>`` test accuracy (mean over seeds) with ``_std``, ``<dataset>.<method>.gain``
(minus vanilla's), and ``<dataset>.<method>.seconds_per_epoch``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

METHODS = {
    "vanilla": {"n_inner_steps": 0, "aux_weight": 0.0},
    "ft1_S": {"n_inner_steps": 1, "inner_lr": "scalar"},
    "ft1_D": {"n_inner_steps": 1, "inner_lr": "diagonal"},
    "ft3_S": {"n_inner_steps": 3, "inner_lr": "scalar"},
    "ft3_D": {"n_inner_steps": 3, "inner_lr": "diagonal"},
}
PAPER_CIFAR10_DENSENET = {
    "vanilla": 0.9454,
    "ft1_S": 0.9486,
    "ft1_D": 0.9479,
    "ft3_S": 0.9508,
    "ft3_D": 0.9512,
}


def _settings(quick: bool) -> dict[str, dict[str, Any]]:
    return {
        "fashion": {
            "epochs": 2 if quick else 5,
            "seeds": 1,
            "params": {"embedding": "mlp", "hidden_layer_sizes": (256,), "embedding_dim": 64},
        },
        "cifar": {
            "epochs": 5 if quick else 20,
            "seeds": 1,
            "params": {"embedding": "conv", "image_shape": (3, 32, 32), "embedding_dim": 128},
        },
    }


def _data(name: str, data_dir: str | None):
    from sklearn.model_selection import train_test_split

    from sksemiparam.datasets import load_cifar10_subset, load_fashion_mnist

    if name == "fashion":
        X_train, y_train = load_fashion_mnist(data_dir, subset="train")
        X_test, y_test = load_fashion_mnist(data_dir, subset="test")
    else:
        X, y = load_cifar10_subset(data_dir)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=800, stratify=y, random_state=0)
    return (X_train / 255.0).astype(np.float32), (X_test / 255.0).astype(np.float32), y_train, y_test


def _estimator(seed: int, epochs: int, n_entries: int, **params):
    from sksemiparam import MetaNeighborhoodsClassifier

    base = {
        "n_entries": n_entries,
        "gamma": 5.0,
        "similarity": "cosine",
        "learning_rate": 1e-3,
        "weight_decay": 7.5e-5,
        "batch_size": 128,
        "max_epochs": epochs,
        "n_iter_no_change": epochs + 1,  # a fixed budget: no stopping on a training-loss plateau
        "device": "cpu",
        "random_state": seed,
    }
    return MetaNeighborhoodsClassifier(**{**base, **params})


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Test accuracy and seconds per epoch of every method on both datasets."""
    n_entries = 1000
    rows: list[dict[str, Any]] = []
    for name, setting in _settings(quick).items():
        X_train, X_test, y_train, y_test = _data(name, data_dir)
        for seed in range(setting["seeds"]):
            for method, params in METHODS.items():
                model = _estimator(seed, setting["epochs"], n_entries, **setting["params"], **params)
                start = time.perf_counter()
                model.fit(X_train, y_train)
                seconds = time.perf_counter() - start
                accuracy = float(model.score(X_test, y_test))
                rows.append(
                    {
                        "dataset": name,
                        "method": method,
                        "seed": seed,
                        "n_train": int(X_train.shape[0]),
                        "n_test": int(X_test.shape[0]),
                        "n_entries": n_entries,
                        "epochs": int(model.n_iter_),
                        "accuracy": round(accuracy, 4),
                        "fit_seconds": round(seconds, 1),
                        "seconds_per_epoch": round(seconds / model.n_iter_, 3),
                        "final_train_loss": round(float(model.loss_curve_[-1]), 4),
                    }
                )
                print(
                    f"  {name} seed {seed} {method:<8} accuracy {accuracy:.4f} ({seconds:.0f} s)", flush=True
                )
    return {"results": rows, "summary": _summary(rows)}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        vanilla = np.mean([r["accuracy"] for r in rows if r["dataset"] == name and r["method"] == "vanilla"])
        for method in METHODS:
            mine = [r for r in rows if r["dataset"] == name and r["method"] == method]
            accuracy = np.array([r["accuracy"] for r in mine])
            summary[f"{name}.{method}"] = round(float(accuracy.mean()), 4)
            summary[f"{name}.{method}_std"] = round(float(accuracy.std()), 4)
            summary[f"{name}.{method}.gain"] = round(float(accuracy.mean() - vanilla), 4)
            summary[f"{name}.{method}.seconds_per_epoch"] = round(
                float(np.mean([r["seconds_per_epoch"] for r in mine])), 2
            )
    summary["paper.cifar10_densenet"] = PAPER_CIFAR10_DENSENET
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """Accuracy of each method per dataset (seeds as dots), and its cost per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, summary = report["results"], report["summary"]
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(METHODS)
    fig, axes = plt.subplots(
        1, len(names), figsize=(5.5 * len(names), 4), constrained_layout=True, squeeze=False
    )
    for ax, name in zip(axes[0], names):
        x = np.arange(len(methods))
        means = [summary[f"{name}.{m}"] for m in methods]
        ax.bar(x, means, color=["0.6"] + ["C0"] * (len(methods) - 1))
        for i, m in enumerate(methods):
            ax.scatter(
                [i] * sum(1 for r in rows if r["dataset"] == name and r["method"] == m),
                [r["accuracy"] for r in rows if r["dataset"] == name and r["method"] == m],
                color="k",
                s=10,
                zorder=3,
            )
        ax.set_xticks(x)
        ax.set_xticklabels(
            [f"{m}\n{summary[f'{name}.{m}.seconds_per_epoch']:.1f} s/ep" for m in methods], fontsize=8
        )
        low = min(r["accuracy"] for r in rows if r["dataset"] == name)
        ax.set_ylim(low - 0.02, max(means) + 0.01)
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
    fig.suptitle(
        "Meta-Neighborhoods classification: vanilla cosine classifier vs 1/3 inner steps, scalar/diag rate"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
