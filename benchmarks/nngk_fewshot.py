"""NNGK with few training examples per class: NNGK vs a softmax network vs k-NN on raw pixels.

Protocol (the review's section 3.1: Meyer et al. found NNGK ~60% vs softmax ~49% on Birds-200 with
6 examples per class, fine-tuning VGG16): for each data set and each number of shots n in
``SHOTS``, and each seed, draw n training images per class from the training pool; fit

- ``nngk``: ``NNGKClassifier`` with the library defaults (k = 32 neighbours, or every other
  training example when fewer, sigma = 1 fixed, learnable importances, refresh every epoch);
- ``softmax``: the same embedding network with a linear softmax layer
  (``SemiparametricClassifier("parametric")``), the usual classifier;
- ``knn``: ``KNeighborsClassifier(n_neighbors=1)`` on the raw pixels (no learning);

and measure accuracy on the test set. The networks are trained from scratch (no pre-training:
unlike the paper's ImageNet-initialised VGG16) for ``STEPS`` optimizer steps (AdamW, learning rate
1e-3, batches of up to 100), whatever n, so small sets are not under-trained. Embeddings: an MLP
784-256-64 for MNIST and Fashion-MNIST, the Appendix-B conv network for the CIFAR-10 subset (3,000
training pool, 1,000 test images). ``SEEDS`` seeds (3 under ``--quick``, which also tests on 2,000
images of MNIST/Fashion-MNIST). ``summary``: ``<dataset>.shots<n>.<method>`` mean test accuracy,
with ``_std``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ._images import load_images, nngk_classifier, plot_shots, shot_means, softmax_classifier

DATASETS = ("mnist", "fashion", "cifar")
SHOTS = (1, 3, 6, 10, 30)
SEEDS = 5
STEPS = 200
BATCH = 100
METHODS = ("nngk", "softmax", "knn")


def _few(y: np.ndarray, shots: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in np.unique(y)])


def _model(method: str, dataset: str, n: int, seed: int):
    if method == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=1)
    batch = min(BATCH, n)
    train = {
        "max_epochs": math.ceil(STEPS / math.ceil(n / batch)),
        "batch_size": batch,
        "n_iter_no_change": 10**6,  # a fixed budget of steps
        "device": "cpu",
        "random_state": seed,
    }
    if method == "softmax":
        return softmax_classifier(dataset, **train)
    return nngk_classifier(dataset, n_neighbors=min(32, n - 1), **train)


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Test accuracy of each method for each data set, number of shots and seed."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    seeds = 3 if quick else SEEDS
    rows: list[dict[str, Any]] = []
    for dataset in DATASETS:
        X_pool, y_pool, X_test, y_test = load_images(dataset, data_dir)
        if quick and dataset != "cifar":
            X_test, y_test = X_test[:2000], y_test[:2000]
        for shots in SHOTS:
            for seed in range(seeds):
                rows_ = _few(y_pool, shots, seed)
                X, y = X_pool[rows_], y_pool[rows_]
                for method in METHODS:
                    model = _model(method, dataset, len(y), seed)
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        model.fit(X, y)
                    seconds = time.perf_counter() - start
                    accuracy = float(model.score(X_test, y_test))
                    rows.append(
                        {
                            "dataset": dataset,
                            "shots": shots,
                            "seed": seed,
                            "method": method,
                            "n_train": len(y),
                            "n_test": len(y_test),
                            "accuracy": round(accuracy, 4),
                            "fit_seconds": round(seconds, 2),
                        }
                    )
                print(
                    f"  {dataset} shots {shots:2d} seed {seed}: "
                    + "  ".join(f"{r['method']} {r['accuracy']:.3f}" for r in rows[-len(METHODS) :]),
                    flush=True,
                )
    summary: dict[str, Any] = shot_means(rows, datasets=DATASETS, shots=SHOTS, methods=METHODS)
    summary["seeds"] = seeds
    summary["steps"] = STEPS
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Accuracy against examples per class, one panel per data set (mean +- std over seeds)."""
    s = report["summary"]
    plot_shots(
        s,
        path,
        datasets=DATASETS,
        shots=SHOTS,
        methods=METHODS,
        xlabel="training examples per class",
        ylabel="test accuracy",
        titles=DATASETS,
        suptitle=f"Few-shot: NNGK vs softmax vs 1-NN on pixels ({s['seeds']} seeds, {s['steps']} steps)",
        log=True,
    )
