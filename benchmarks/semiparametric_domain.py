"""Deep Semiparametric Learning's Figure 2: adapting to a new or expanded domain from k examples per class.

Protocol (Jain & Lindsey, section 4: "We train to convergence on a subset of MNIST containing half
the available classes. Then we train it on k examples of unseen classes ("new domain"), varying k
... The same results hold when we include all classes in the second ("expanded") domain ... On
CIFAR-10 ... allowing multiple iterations over the training data in the second domain"):

- All ten classes are declared up front (``partial_fit(classes=range(10))`` on the first domain,
  then ``fit`` with ``warm_start`` to convergence: early stopping on 20% of the data, patience
  10). The first domain is the training images of classes 0-4, less a reserve of ``RESERVE``
  images per class that are never trained on in the first domain.
- Second domain, separately for each k in ``K``: k training images of each class 5-9 ("new"), or
  k of each class 0-9 ("expanded"; the old classes' images come from the reserve), the same images
  for all three modes. A copy of the converged model makes ``PASSES[dataset]`` passes over them,
  one ``partial_fit`` each (the semiparametric and nonparametric modes store them in memory on the
  first pass). After the passes listed, accuracy on the new-domain test images (classes 5-9) and on
  the whole test set.
- MNIST: the official split, the paper's MNIST network (784-32-32 embedding, one linear layer,
  batch 100). CIFAR-10: the 4000-image subset, test split = 1000 images (stratified, seed 0; see
  ``_images.load_images``), the paper's CIFAR network (the conv embedding to 128, head (128, 128));
  batch 100 rather than the paper's 1000, since the first domain holds only 1000 images.
- AdamW 1e-3, tau = 2; ``SEEDS`` seeds (3 under ``--quick``, which also uses 2000 MNIST test images).

``summary``: ``<dataset>.<domain>.<mode>.k<k>.new`` and ``.all`` after the last pass (mean over seeds,
with ``_std``), the first-domain accuracy ``<dataset>.<mode>.old_domain``, and the CIFAR split.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ._images import CIFAR_TEST_SIZE, load_images

MODES = ("semiparametric", "parametric", "nonparametric")
K = (1, 5, 10, 50, 100)
OLD, NEW = tuple(range(5)), tuple(range(5, 10))
RESERVE = 100
SEEDS = 5
N_JOBS = 2
PASSES = {"mnist": (1, 10), "cifar": (1, 10, 20)}
NETWORKS: dict[str, dict[str, Any]] = {
    "mnist": {"hidden_layer_sizes": (32,), "embedding_dim": 32, "head_layer_sizes": (), "max_epochs": 50},
    "cifar": {
        "embedding": "conv",
        "image_shape": (3, 32, 32),
        "embedding_dim": 128,
        "head_layer_sizes": (128, 128),
        "max_epochs": 100,
    },
}


def _first_domain(clf, X, y):
    """Declare all ten classes, then train to convergence (early stopping) on (X, y)."""
    clf.partial_fit(X, y, classes=np.arange(10))
    clf.set_params(warm_start=True)
    clf.fit(X, y)
    clf.set_params(warm_start=False)
    return clf


def _second_domain_memory_scores(model, X, y, X_test, y_test):
    """Accuracy when the neighbours at prediction are the second domain's k examples per class only.

    The paper computes the neighbour estimate over the current batch and does not say which
    examples serve as neighbours at validation; if they are the second domain's training batch,
    this is its protocol. The estimator itself consults every stored example (the first domain's
    thousands and the k per class), so this variant is measured on a copy whose memory is
    replaced by ``set_memory``.
    """
    if model.mode == "parametric":
        return {}
    probe = copy.deepcopy(model).set_memory(X, y)
    if np.isin(y, OLD).any():
        scores = _scores(probe, X_test, y_test)
        return {"new_memory2": scores["new"], "all_memory2": scores["all"]}
    new = np.isin(y_test, NEW)
    return {"new_memory2": round(float(probe.score(X_test[new], y_test[new])), 4)}


def _scores(model, X_test, y_test):
    """Accuracy on the new classes' test images, the old ones' and all (one prediction)."""
    correct = model.predict(X_test) == y_test
    new = np.isin(y_test, NEW)
    return {
        "new": round(float(correct[new].mean()), 4),
        "old": round(float(correct[~new].mean()), 4),
        "all": round(float(correct.mean()), 4),
    }


def _sample(rng, y, rows, classes, k):
    return np.concatenate([rng.choice(rows[y[rows] == c], k, replace=False) for c in classes])


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Accuracy after the second-domain passes, per data set, domain, k, mode and seed.

    The (data set, seed) tasks run in ``N_JOBS`` processes of one torch thread each (no timings
    are reported, so sharing the machine does not bias anything), the long CIFAR tasks first.
    """
    from joblib import Parallel, delayed

    seeds = 3 if quick else SEEDS
    tasks = [(dataset, seed) for dataset in ("cifar", "mnist") for seed in range(seeds)]
    outputs = Parallel(n_jobs=N_JOBS)(delayed(_task)(d, s, quick, data_dir) for d, s in tasks)
    results = [row for rows in outputs for row in rows]
    return {"results": results, "summary": _summary(results, seeds)}


def _task(
    dataset: str, seed: int, quick: bool, data_dir: str | None, variants: dict[str, dict] | None = None
) -> list[dict[str, Any]]:
    """Both domains, every k and model variant (default: the three modes), for one data set and seed.

    ``variants`` maps a label (recorded as the row's ``mode``) to SemiparametricClassifier
    parameters, ``mode`` included.
    """
    if variants is None:
        # The paper's models: no skip (the estimator's default adds one).
        variants = {mode: {"mode": mode, "neighbor_skip": None} for mode in MODES}
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from sksemiparam import SemiparametricClassifier

    torch.set_num_threads(1)
    X_pool, y_pool, X_test, y_test = load_images(dataset, data_dir)
    if quick and dataset == "mnist":
        X_test, y_test = X_test[:2000], y_test[:2000]
    old_test = ~np.isin(y_test, NEW)
    rng = np.random.default_rng(seed)
    old_rows = np.flatnonzero(np.isin(y_pool, OLD))
    reserve = np.concatenate(
        [rng.choice(old_rows[y_pool[old_rows] == c], RESERVE, replace=False) for c in OLD]
    )
    train_rows = np.setdiff1d(old_rows, reserve)
    new_rows = np.flatnonzero(np.isin(y_pool, NEW))
    draws = {
        (domain, k): _sample(rng, y_pool, new_rows, NEW, k)
        if domain == "new"
        else np.concatenate([_sample(rng, y_pool, reserve, OLD, k), _sample(rng, y_pool, new_rows, NEW, k)])
        for domain in ("new", "expanded")
        for k in K
    }
    rows: list[dict[str, Any]] = []
    for mode, params in variants.items():
        clf = SemiparametricClassifier(
            **params, **NETWORKS[dataset], batch_size=100, early_stopping=True, validation_fraction=0.2,
            n_iter_no_change=10,
            device="cpu", random_state=seed,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _first_domain(clf, X_pool[train_rows], y_pool[train_rows])
        old_acc = round(float(clf.score(X_test[old_test], y_test[old_test])), 4)
        rows.append(
            {"dataset": dataset, "domain": "first", "k": None, "mode": mode, "seed": seed,
             "passes": clf.n_iter_, "old": old_acc}
        )  # fmt: skip
        print(
            f"  {dataset} seed {seed} {mode:<14} first domain {old_acc:.4f} ({clf.n_iter_} epochs)",
            flush=True,
        )
        for (domain, k), draw in draws.items():
            model = copy.deepcopy(clf)
            for p in range(1, max(PASSES[dataset]) + 1):
                model.partial_fit(X_pool[draw], y_pool[draw])
                if p in PASSES[dataset]:
                    rows.append(
                        {
                            "dataset": dataset, "domain": domain, "k": k, "mode": mode, "seed": seed,
                            "passes": p,
                            **_scores(model, X_test, y_test),
                            **_second_domain_memory_scores(model, X_pool[draw], y_pool[draw], X_test, y_test),
                        }
                    )  # fmt: skip
            last = rows[-1]
            print(
                f"    {dataset} seed {seed} {mode:<14} {domain:<8} k={k:<3} new {last['new']:.4f} "
                f"all {last['all']:.4f}",
                flush=True,
            )
    return rows


def _summary(results, seeds, modes=MODES, datasets=tuple(PASSES)):
    summary: dict[str, Any] = {
        "seeds": seeds,
        "k": list(K),
        "passes": {d: list(p) for d, p in PASSES.items()},
        "cifar_split": f"4000-image subset, {CIFAR_TEST_SIZE} test images (stratified, seed 0)",
    }
    for dataset in datasets:
        last = max(PASSES[dataset])
        for mode in modes:
            accs = [
                r["old"]
                for r in results
                if (r["dataset"], r["domain"], r["mode"]) == (dataset, "first", mode)
            ]
            summary[f"{dataset}.{mode}.old_domain"] = round(float(np.mean(accs)), 4)
            for domain in ("new", "expanded"):
                for k in K:
                    key = (dataset, domain, k, mode, last)
                    sel = [
                        r
                        for r in results
                        if (r["dataset"], r["domain"], r["k"], r["mode"], r["passes"]) == key
                    ]
                    for metric in ("new", "old", "all", "new_memory2", "all_memory2"):
                        values = np.array([r[metric] for r in sel if metric in r])
                        if values.size == 0:
                            continue
                        key = f"{dataset}.{domain}.{mode}.k{k}.{metric}"
                        summary[key] = round(float(values.mean()), 4)
                        summary[key + "_std"] = round(float(values.std()), 4)
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """Figure 2: new-classes test accuracy against k, per data set and domain, after the first and last
    pass; top row with the estimator's memory (everything stored), bottom row with the second
    domain's examples as the only neighbours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    panels = [(d, dom) for d in PASSES for dom in ("new", "expanded")]
    fig, axes = plt.subplots(
        2, len(panels), figsize=(4.5 * len(panels), 8), constrained_layout=True, sharey=True
    )
    for row, (metric, memory) in enumerate((("new", "all stored"), ("new_memory2", "second domain only"))):
        for ax, (dataset, domain) in zip(axes[row], panels):
            for mode, color in zip(MODES, ("C0", "C1", "C2")):
                for passes, style in zip((1, max(PASSES[dataset])), (":", "-")):
                    key = (dataset, domain, mode, passes)
                    values = [
                        [r[metric] for r in rows if (r["dataset"], r["domain"], r["mode"], r["passes"]) == key
                         and r["k"] == k and metric in r]
                        for k in K
                    ]  # fmt: skip
                    if not all(values):
                        continue
                    ax.plot(
                        K, [np.mean(v) for v in values], style, color=color, marker="o",
                        label=f"{mode}, {passes} pass(es)",
                    )  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel("k examples per class in the second domain")
            ax.set_ylabel("accuracy on the new classes")
            ax.set_title(f"{dataset}, {domain} domain; neighbours: {memory}", fontsize=9)
        axes[row][0].legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
