"""NNGK's few-shot claim in the paper's regime: pretrain on half the classes, then k shots of the others.

Meyer et al. (the review's section 3.1) report NNGK ~60% vs softmax ~49% on Birds-200 with 6 examples
per class, fine-tuning an ImageNet-pretrained VGG16: the few-shot classes met an embedding that was
already good. ``nngk-fewshot`` trains from scratch instead; this benchmark recreates the paper's
regime (issue 19, part 3). For each data set and seed:

1. **Pretraining.** The ten classes are split at random (by the seed) into five base and five novel
   classes. On every training image of the base classes (MNIST and Fashion-MNIST: ~30,000; the
   CIFAR-10 subset: ~1,500) two networks are trained for ``PRETRAIN_STEPS`` AdamW steps of batch
   100, with the same embedding (``_images.EMBEDDINGS``): ``NNGKClassifier`` (defaults otherwise)
   and the softmax network ``SemiparametricClassifier("parametric")``.
2. **k shots** (``SHOTS``) of each novel class are drawn from the training pool (the support set) and
   the methods are tested on every test image of the novel classes (5-way):

   - ``nngk``: the support images become NNGK's centres in the pretrained embedding, with no
     retraining: eq. (7)'s Gaussian-kernel vote over the min(32, 5k) nearest support centres, with
     the pretrained sigma (``sksemiparam.nn.gaussian_kernel_log_weights`` and
     ``kernel_vote_log_proba``);
   - ``nngk_finetuned``: a new ``NNGKClassifier`` whose embedding starts as a copy of the pretrained
     one, fitted on the support set for ``FINETUNE_STEPS`` steps (each row's own centre left out of
     its vote: with one shot no row has a same-class neighbour, so nothing is learnt);
   - ``softmax_finetuned``: the pretrained softmax network's embedding with a new linear softmax
     layer, fitted on the support set for ``FINETUNE_STEPS`` steps;
   - ``knn``: ``KNeighborsClassifier(n_neighbors=1)`` on NNGK's frozen pretrained embedding.

``SEEDS`` seeds (2 under ``--quick``, which also shortens pretraining and tests on 1,000 images).
``summary``: ``<dataset>.shots<k>.<method>`` mean 5-way test accuracy over the seeds, with ``_std``;
``<dataset>.pretrain.<nngk|softmax>``: the pretrained networks' accuracy on the base classes' test
images.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np

from ._images import EMBEDDINGS, load_images, nngk_classifier, plot_shots, shot_means, softmax_classifier

DATASETS = ("mnist", "fashion", "cifar")
SHOTS = (1, 5, 6, 10)
SEEDS = 5
PRETRAIN_STEPS = {"mnist": 1500, "fashion": 1500, "cifar": 600}
FINETUNE_STEPS = 100
BATCH = 100
METHODS = ("nngk", "nngk_finetuned", "softmax_finetuned", "knn")


def _budget(n: int, steps: int, seed: int) -> dict[str, Any]:
    """Training parameters for ``steps`` steps over n rows (no convergence stop)."""
    batch = min(BATCH, n)
    return {
        "max_epochs": max(1, math.ceil(steps / math.ceil(n / batch))),
        "batch_size": batch,
        "n_iter_no_change": 10**6,
        "device": "cpu",
        "random_state": seed,
    }


def _copy_of(module):
    """An ``embedding`` factory returning a copy of a trained embedding (fine-tuning starts there)."""

    def factory(in_features: int, embedding_dim: int):
        return copy.deepcopy(module)

    return factory


def _embed(module, X: np.ndarray) -> np.ndarray:
    import torch

    module.eval()
    with torch.no_grad():
        return torch.cat([module(torch.from_numpy(X[s : s + 2048])) for s in range(0, len(X), 2048)]).numpy()


def _nngk_vote(pretrained, X_support, y_support, X_test) -> np.ndarray:
    """Predicted classes of X_test by eq. (7) over the support set's centres (no retraining)."""
    import torch

    from sksemiparam.nn import gaussian_kernel_log_weights, kernel_vote_log_proba, pairwise_sq_distances

    embedding = pretrained.module_.embedding
    classes, labels = np.unique(y_support, return_inverse=True)
    centres = torch.from_numpy(_embed(embedding, X_support))
    queries = torch.from_numpy(_embed(embedding, X_test))
    k = min(32, len(y_support))
    sq, ids = pairwise_sq_distances(queries, centres).topk(k, dim=1, largest=False)
    log_w = gaussian_kernel_log_weights(sq, float(pretrained.module_.sigma))
    log_p = kernel_vote_log_proba(log_w, torch.from_numpy(labels)[ids], len(classes))
    return classes[log_p.argmax(1).numpy()]


def _accuracy(predicted: np.ndarray, y: np.ndarray) -> float:
    return round(float(np.mean(predicted == y)), 4)


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neighbors import KNeighborsClassifier

    from sksemiparam import NNGKClassifier, SemiparametricClassifier

    seeds = 2 if quick else SEEDS
    rows: list[dict[str, Any]] = []
    for dataset in DATASETS:
        X_pool, y_pool, X_test, y_test = load_images(dataset, data_dir)
        steps = PRETRAIN_STEPS[dataset] // (5 if quick else 1)
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            base = np.sort(rng.permutation(np.unique(y_pool))[:5])
            is_base, is_base_test = np.isin(y_pool, base), np.isin(y_test, base)
            X_novel_test, y_novel_test = X_test[~is_base_test], y_test[~is_base_test]
            if quick:
                X_novel_test, y_novel_test = X_novel_test[:1000], y_novel_test[:1000]
            train = _budget(int(is_base.sum()), steps, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                nngk = nngk_classifier(dataset, **train).fit(X_pool[is_base], y_pool[is_base])
                softmax = softmax_classifier(dataset, **train).fit(X_pool[is_base], y_pool[is_base])
            pretrain = {
                "nngk": float(nngk.score(X_test[is_base_test], y_test[is_base_test])),
                "softmax": float(softmax.score(X_test[is_base_test], y_test[is_base_test])),
            }
            frozen_test = _embed(nngk.module_.embedding, X_novel_test)
            novel_pool = np.flatnonzero(~is_base)
            for shots in SHOTS:
                support = np.concatenate(
                    [
                        rng.choice(novel_pool[y_pool[novel_pool] == c], shots, replace=False)
                        for c in np.unique(y_pool[novel_pool])
                    ]
                )
                X_s, y_s = X_pool[support], y_pool[support]
                tune = _budget(len(y_s), FINETUNE_STEPS, seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    nngk_ft = NNGKClassifier(
                        **{**EMBEDDINGS[dataset], "embedding": _copy_of(nngk.module_.embedding)}, **tune
                    ).fit(X_s, y_s)
                    softmax_ft = SemiparametricClassifier(
                        "parametric",
                        **{**EMBEDDINGS[dataset], "embedding": _copy_of(softmax.module_.embedding)},
                        head_layer_sizes=(),
                        **tune,
                    ).fit(X_s, y_s)
                knn = KNeighborsClassifier(n_neighbors=1).fit(_embed(nngk.module_.embedding, X_s), y_s)
                accuracy = {
                    "nngk": _accuracy(_nngk_vote(nngk, X_s, y_s, X_novel_test), y_novel_test),
                    "nngk_finetuned": _accuracy(nngk_ft.predict(X_novel_test), y_novel_test),
                    "softmax_finetuned": _accuracy(softmax_ft.predict(X_novel_test), y_novel_test),
                    "knn": _accuracy(knn.predict(frozen_test), y_novel_test),
                }
                for method in METHODS:
                    rows.append(
                        {
                            "dataset": dataset,
                            "seed": seed,
                            "base_classes": base.tolist(),
                            "shots": shots,
                            "method": method,
                            "accuracy": accuracy[method],
                            "n_test": len(y_novel_test),
                            "pretrain_accuracy": round(
                                pretrain["softmax" if method == "softmax_finetuned" else "nngk"], 4
                            ),
                        }
                    )
                print(
                    f"  {dataset} seed {seed} shots {shots:2d}: "
                    + "  ".join(f"{m} {accuracy[m]:.3f}" for m in METHODS),
                    flush=True,
                )
    return {"results": rows, "summary": summarise(rows, seeds, quick)}


def summarise(rows, seeds, quick) -> dict[str, Any]:
    summary: dict[str, Any] = {"seeds": seeds, "finetune_steps": FINETUNE_STEPS}
    for dataset in DATASETS:
        summary[f"{dataset}.pretrain_steps"] = PRETRAIN_STEPS[dataset] // (5 if quick else 1)
        for name, method in (("nngk", "nngk"), ("softmax", "softmax_finetuned")):
            values = [
                r["pretrain_accuracy"] for r in rows if r["dataset"] == dataset and r["method"] == method
            ]
            summary[f"{dataset}.pretrain.{name}"] = round(float(np.mean(values)), 4)
    summary.update(shot_means(rows, datasets=DATASETS, shots=SHOTS, methods=METHODS))
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """5-way accuracy on the novel classes against shots, one panel per data set (mean +- std)."""
    s = report["summary"]
    plot_shots(
        s,
        path,
        datasets=DATASETS,
        shots=SHOTS,
        methods=METHODS,
        xlabel="shots per novel class",
        ylabel="5-way test accuracy",
        titles=[f"{d} (pretrained NNGK: {s[f'{d}.pretrain.nngk']:.3f})" for d in DATASETS],
        suptitle=f"Few-shot after pretraining on 5 base classes ({s['seeds']} seeds)",
    )
