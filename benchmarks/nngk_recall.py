"""Embedding quality: Recall@K of NNGK's embeddings vs a softmax network's penultimate features.

Protocol (the review's section 3.1: Meyer et al. report higher Recall@K than the best metric-learning
methods on Cars196 and Birds200): on Fashion-MNIST, train ``NNGKClassifier`` and the softmax
network with the same embedding network (MLP 784-256-64; the softmax network's features are its
penultimate layer, after ReLU) on the training set for ``EPOCHS`` epochs (AdamW 1e-3, batch 100).
Embed the test and training images; for each test image, Recall@K is 1 when at least one of its K
nearest training embeddings (squared Euclidean, exact search) has its class. Raw pixels are the
reference. ``summary``: ``<method>.recall_at_<K>`` for K in 1, 2, 4, 8 and methods ``nngk``,
``softmax``, ``pixels``; also each network's test accuracy. ``--quick``: 10,000 training images,
2 epochs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ._images import load_images, nngk_classifier, softmax_classifier

KS = (1, 2, 4, 8)
EPOCHS = 10


def _embed(fn, X: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(torch.from_numpy(X[s : s + 4096])) for s in range(0, X.shape[0], 4096)])


def recall_at(queries: torch.Tensor, keys: torch.Tensor, q_labels, k_labels, ks=KS) -> dict[int, float]:
    """Fraction of queries with a same-class key among their K nearest, for each K."""
    from sksemiparam.index import NeighborIndex

    _, ids = NeighborIndex("exact").build(keys).query(queries, max(ks))
    hit = torch.from_numpy(np.asarray(k_labels))[ids] == torch.from_numpy(np.asarray(q_labels))[:, None]
    return {k: float(hit[:, :k].any(1).float().mean()) for k in ks}


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Recall@K of each method's test embeddings against its training embeddings."""
    X_train, y_train, X_test, y_test = load_images("fashion", data_dir)
    epochs = 2 if quick else EPOCHS
    if quick:
        X_train, y_train = X_train[:10_000], y_train[:10_000]
    train = {"max_epochs": epochs, "batch_size": 100, "n_iter_no_change": 10**6, "device": "cpu"}
    rows, summary = [], {}
    models = {
        "nngk": nngk_classifier("fashion", random_state=0, **train),
        "softmax": softmax_classifier("fashion", random_state=0, **train),
    }
    for name, model in [*models.items(), ("pixels", None)]:
        start = time.perf_counter()
        if model is None:
            embed, accuracy = (lambda X: X), None
        else:
            model.fit(X_train, y_train)
            model.module_.eval()
            embed = model.module_ if name == "nngk" else model.module_.embed
            accuracy = float(model.score(X_test, y_test))
        seconds = time.perf_counter() - start
        recall = recall_at(_embed(embed, X_test), _embed(embed, X_train), y_test, y_train)
        rows.append(
            {
                "method": name,
                "n_train": int(X_train.shape[0]),
                "epochs": epochs if model is not None else None,
                "test_accuracy": None if accuracy is None else round(accuracy, 4),
                "fit_seconds": round(seconds, 1),
                **{f"recall_at_{k}": round(v, 4) for k, v in recall.items()},
            }
        )
        for k, v in recall.items():
            summary[f"{name}.recall_at_{k}"] = round(v, 4)
        if accuracy is not None:
            summary[f"{name}.test_accuracy"] = round(accuracy, 4)
        print(f"  {name:<8} " + "  ".join(f"R@{k} {v:.4f}" for k, v in recall.items()), flush=True)
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Recall@K curves of the three embeddings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), constrained_layout=True)
    for row in report["results"]:
        ax.plot(KS, [row[f"recall_at_{k}"] for k in KS], marker="o", label=row["method"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(KS)
    ax.set_xticklabels([str(k) for k in KS])
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (test -> training images)")
    ax.set_title(f"Fashion-MNIST embeddings, {report['results'][0]['epochs']} epochs")
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
