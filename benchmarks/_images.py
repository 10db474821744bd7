"""Image data and embedding settings shared by the NNGK benchmarks."""

from __future__ import annotations

from typing import Any

import numpy as np

# The embedding network of each data set, for every neural method of a benchmark.
EMBEDDINGS: dict[str, dict[str, Any]] = {
    "mnist": {"embedding": "mlp", "hidden_layer_sizes": (256,), "embedding_dim": 64},
    "fashion": {"embedding": "mlp", "hidden_layer_sizes": (256,), "embedding_dim": 64},
    "cifar": {"embedding": "conv", "image_shape": (3, 32, 32), "embedding_dim": 128},
}
CIFAR_TEST_SIZE = 1000


def load_images(name: str, data_dir: str | None):
    """(X_train, y_train, X_test, y_test) scaled to [0, 1], float32.

    MNIST and Fashion-MNIST: the official splits. The 4000-image CIFAR-10 subset has no test split:
    ``CIFAR_TEST_SIZE`` images (stratified, seed 0) are the test set, the rest the training pool.
    """
    from sklearn.model_selection import train_test_split

    from sksemiparam.datasets import load_cifar10_subset, load_fashion_mnist, load_mnist

    if name == "cifar":
        X, y = load_cifar10_subset(data_dir)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=CIFAR_TEST_SIZE, stratify=y, random_state=0
        )
    else:
        loader = {"mnist": load_mnist, "fashion": load_fashion_mnist}[name]
        X_train, y_train = loader(data_dir, subset="train")
        X_test, y_test = loader(data_dir, subset="test")
    scale = np.float32(1 / 255)
    return X_train.astype(np.float32) * scale, y_train, X_test.astype(np.float32) * scale, y_test


def softmax_classifier(dataset: str, **params):
    """The softmax baseline: the same embedding network, then a linear layer and softmax."""
    from sksemiparam import SemiparametricClassifier

    return SemiparametricClassifier("parametric", **EMBEDDINGS[dataset], head_layer_sizes=(), **params)


def nngk_classifier(dataset: str, **params):
    from sksemiparam import NNGKClassifier

    return NNGKClassifier(**EMBEDDINGS[dataset], **params)


def plot_shots(summary, path, *, datasets, shots, methods, xlabel, ylabel, titles, suptitle, log=False):
    """Accuracy against shots, one panel per data set: ``summary["<dataset>.shots<k>.<method>"]``
    (mean, with ``_std``) for each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.8), constrained_layout=True)
    for ax, dataset, title in zip(axes, datasets, titles):
        for method in methods:
            mean = np.array([summary[f"{dataset}.shots{k}.{method}"] for k in shots])
            std = np.array([summary[f"{dataset}.shots{k}.{method}_std"] for k in shots])
            ax.errorbar(shots, mean, yerr=std, marker="o", capsize=3, label=method)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(shots)
        ax.set_xticklabels([str(k) for k in shots])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(suptitle)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shot_means(rows, *, datasets, shots, methods) -> dict[str, float]:
    """``<dataset>.shots<k>.<method>``: the mean of the rows' ``accuracy`` over seeds, with ``_std``."""
    summary = {}
    for dataset in datasets:
        for k in shots:
            for method in methods:
                acc = [
                    r["accuracy"]
                    for r in rows
                    if (r["dataset"], r["shots"], r["method"]) == (dataset, k, method)
                ]
                summary[f"{dataset}.shots{k}.{method}"] = round(float(np.mean(acc)), 4)
                summary[f"{dataset}.shots{k}.{method}_std"] = round(float(np.std(acc)), 4)
    return summary
