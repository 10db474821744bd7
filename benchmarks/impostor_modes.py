"""Impostor centre modes and compression: loose / tied / fixed vs NNGK vs softmax; PQ at 8/16/32 bytes.

Protocol (Lebedev et al.: loose impostors "often give the best accuracy and never perform much
worse"; 5994 centres of 512-d in 92 KB, 16 bytes each): on Fashion-MNIST (official test set) and
the CIFAR-10 subset (3,000 training / 1,000 test images), fit with the same embedding network
(MLP 784-256-64; the conv network with 128-d embeddings for CIFAR), AdamW 1e-3, batch 100, a fixed
number of epochs (Fashion 5, CIFAR 15; ``--quick``: 10,000 Fashion training images and 2,000
test images, 2 and 5 epochs), k = 32, sigma "scale":

- ``loose``, ``tied``, ``fixed``: ``ImpostorClassifier(centers=...)``, eq. (8) with lambda = 1;
- ``nngk``: ``NNGKClassifier`` (tied centres plus learned importance weights);
- ``softmax``: the same embedding with a linear softmax layer;
- ``pq8``, ``pq16``, ``pq32``: the ``loose`` model with its centres product-quantised to 8, 16 or
  32 bytes (``compress()``; the network is not retrained), and ``pq16_opq`` with a learned OPQ
  rotation.

``summary``: ``<dataset>.<variant>`` test accuracy; ``<dataset>.bytes_per_center.<variant>`` and
``bytes_per_center.pq16`` (16); ``<dataset>.codebook_bytes.pq16`` (the shared codebooks);
``<dataset>.n_centers``.
"""

from __future__ import annotations

import time
from typing import Any

from ._images import EMBEDDINGS, load_images, nngk_classifier, softmax_classifier

DATASETS = ("fashion", "cifar")
PQ = (8, 16, 32)


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Accuracy of each variant, and the bytes per centre of the quantised ones."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from sksemiparam import ImpostorClassifier

    rows, summary = [], {}
    for dataset in DATASETS:
        X_train, y_train, X_test, y_test = load_images(dataset, data_dir)
        if quick and dataset == "fashion":
            X_train, y_train, X_test, y_test = (
                X_train[:10_000],
                y_train[:10_000],
                X_test[:2000],
                y_test[:2000],
            )
        epochs = {"fashion": 2 if quick else 5, "cifar": 5 if quick else 15}[dataset]
        train = {
            "max_epochs": epochs,
            "batch_size": 100,
            "n_iter_no_change": 10**6,
            "device": "cpu",
            "random_state": 0,
        }
        models = {
            "loose": ImpostorClassifier(centers="loose", **EMBEDDINGS[dataset], **train),
            "tied": ImpostorClassifier(centers="tied", **EMBEDDINGS[dataset], **train),
            "fixed": ImpostorClassifier(centers="fixed", **EMBEDDINGS[dataset], **train),
            "nngk": nngk_classifier(dataset, **train),
            "softmax": softmax_classifier(dataset, **train),
        }
        for name, model in models.items():
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X_train, y_train)
            seconds = time.perf_counter() - start
            accuracy = float(model.score(X_test, y_test))
            bytes_per = getattr(model, "bytes_per_center_", None)
            rows.append(
                {
                    "dataset": dataset,
                    "variant": name,
                    "accuracy": round(accuracy, 4),
                    "fit_seconds": round(seconds, 1),
                    "bytes_per_center": bytes_per,
                    "epochs": epochs,
                    "n_train": int(X_train.shape[0]),
                }
            )
            summary[f"{dataset}.{name}"] = round(accuracy, 4)
            if bytes_per is not None:
                summary[f"{dataset}.bytes_per_center.{name}"] = bytes_per
            print(f"  {dataset} {name:<8} accuracy {accuracy:.4f} ({seconds:.0f} s)", flush=True)
        loose = models["loose"]
        summary[f"{dataset}.n_centers"] = int(loose.centers_X_.shape[0])
        for m, rotation in [*((m, False) for m in PQ), (16, True)]:
            name = f"pq{m}" + ("_opq" if rotation else "")
            start = time.perf_counter()
            loose.set_params(quantize="pq", pq_subspaces=m, pq_rotation=rotation).compress()
            seconds = time.perf_counter() - start
            accuracy = float(loose.score(X_test, y_test))
            rows.append(
                {
                    "dataset": dataset,
                    "variant": name,
                    "accuracy": round(accuracy, 4),
                    "compress_seconds": round(seconds, 1),
                    "bytes_per_center": loose.bytes_per_center_,
                    "codebook_bytes": loose.quantizer_.codebook_nbytes,
                }
            )
            summary[f"{dataset}.{name}"] = round(accuracy, 4)
            summary[f"{dataset}.bytes_per_center.{name}"] = loose.bytes_per_center_
            summary[f"{dataset}.codebook_bytes.{name}"] = loose.quantizer_.codebook_nbytes
            print(
                f"  {dataset} {name:<8} accuracy {accuracy:.4f} ({loose.bytes_per_center_} B/centre)",
                flush=True,
            )
        loose.set_params(quantize=None).compress()
    summary["bytes_per_center.pq16"] = summary["fashion.bytes_per_center.pq16"]
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Accuracy per variant, one panel per data set, bytes per centre in the labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(6 * len(DATASETS), 4), constrained_layout=True)
    for ax, dataset in zip(axes, DATASETS):
        mine = [r for r in rows if r["dataset"] == dataset]
        labels = [
            r["variant"] + ("" if r["bytes_per_center"] is None else f"\n{r['bytes_per_center']} B")
            for r in mine
        ]
        accuracy = [r["accuracy"] for r in mine]
        colours = ["C0" if not r["variant"].startswith("pq") else "C1" for r in mine]
        ax.bar(range(len(mine)), accuracy, color=colours)
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylim(min(accuracy) - 0.05, max(accuracy) + 0.02)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{dataset}: centre modes (blue), quantised loose centres (orange)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
