"""MbPA on permuted MNIST: continual learning of tasks that permute the pixels, against an MLP and EWC.

Protocol (Sprechmann et al.'s permuted-MNIST experiment, scaled to 2 CPU cores): ``n_tasks`` tasks,
each all of MNIST under its own fixed pixel permutation (task 0: the identity), ``n_train`` training
images per task, learned one after the other through ``partial_fit`` (``epochs`` passes, mini-batches
of 100) with ``sksemiparam.continual.evaluate_stream``; after each task the accuracy on every task's
test rows (``n_test`` per task) fills the matrix R.

Every method is ``MbPAClassifier`` with the paper's setting for this experiment: the keys are the
pixels (``embedding="identity"``) and the output network is a 2-layer MLP (784-100-10), trained with
Adam (AdamW without weight decay). Methods (the summary keys):

- ``mlp``: ``inference="parametric"`` (the naive network; the memory is unused);
- ``mlp_ewc``: the same with elastic weight consolidation (``ewc_lambda``; ``end_task`` after each task);
- ``mbpa_1k``, ``mbpa_10k``, ``mbpa_all``: MbPA with memories of 1,000, 10,000 and unbounded entries;
- ``mbpa_ewc``: MbPA (10,000 entries) trained with EWC (the paper's best combination).

The memory does not influence training, so ``mlp`` and the ``mbpa_*`` methods share the same
network (same seed): they differ only in how they predict. As in the paper, the EWC strength and
the local adaptation (steps and rate; K = 32, pull-back 0.1) are chosen by grid search, here on a
validation stream built from training images only (3 permuted tasks of 5,000 images, tested on
2,000 other training images each) by average accuracy: ``ewc_lambda`` with ``mlp_ewc``, the
adaptation with MbPA (10,000 entries). ``summary``: ``<method>.avg_accuracy`` (mean of R's last
row), ``<method>.bwt`` (backward transfer), and the selected ``ewc_lambda``, ``adapt_steps``,
``adapt_lr``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

EWC_GRID = [1.0, 10.0, 100.0, 1_000.0, 10_000.0]
ADAPT_GRID = [(steps, lr) for steps in (1, 5) for lr in (0.001, 0.01, 0.1)]
METHODS = {  # "ewc_lambda": None is filled in with the selected strength
    "mlp": {"inference": "parametric"},
    "mlp_ewc": {"inference": "parametric", "ewc_lambda": None},
    "mbpa_1k": {"memory_size": 1_000},
    "mbpa_10k": {"memory_size": 10_000},
    "mbpa_all": {"memory_size": None},
    "mbpa_ewc": {"memory_size": 10_000, "ewc_lambda": None},
}


def _estimator(seed: int, **params):
    from sksemiparam import MbPAClassifier

    base = {
        "embedding": "identity",
        "head_layer_sizes": (100,),
        "n_neighbors": 32,
        "adapt_steps": 5,
        "adapt_lr": 0.1,
        "adapt_reg": 0.1,
        "batch_size": 100,
        "learning_rate": 1e-3,
        "index": "exact",
        "device": "cpu",
        "random_state": seed,
    }
    return MbPAClassifier(**{**base, **params})


def _validation_tasks(X_train, y_train):
    """3 permuted tasks from training images only: 5,000 to learn and 2,000 others to test, each."""
    from sksemiparam.continual import permuted_tasks

    rows = np.random.default_rng(1).permutation(X_train.shape[0])
    fit_rows, val_rows = rows[:15_000], rows[15_000:21_000]
    return permuted_tasks(
        X_train[fit_rows], y_train[fit_rows], X_train[val_rows], y_train[val_rows], 3,
        n_train_per_task=5_000, n_test_per_task=2_000, random_state=1,
    )  # fmt: skip


def _select(X_train, y_train, epochs: int) -> tuple[float, tuple[int, float], dict[str, float]]:
    """Grid search of ewc_lambda and of the adaptation (steps, rate) on the validation stream."""
    from sksemiparam.continual import evaluate_stream

    tasks = _validation_tasks(X_train, y_train)
    stream = {"classes": np.arange(10), "epochs": epochs, "batch_size": 1000, "random_state": 1}
    scores: dict[str, float] = {}
    for lam in EWC_GRID:
        result = evaluate_stream(_estimator(0, inference="parametric", ewc_lambda=lam), tasks, **stream)
        scores[f"ewc_lambda={lam:g}"] = round(result.average_accuracy, 4)
        print(f"  validation: ewc_lambda={lam:g}: average accuracy {result.average_accuracy:.4f}", flush=True)
    best_lambda = max(EWC_GRID, key=lambda lam: scores[f"ewc_lambda={lam:g}"])
    # One MbPA model trained on the validation stream; only its prediction settings vary.
    mbpa = _estimator(0, memory_size=10_000)
    evaluate_stream(mbpa, tasks, **stream)
    for steps, lr in ADAPT_GRID:
        mbpa.set_params(adapt_steps=steps, adapt_lr=lr)
        accuracy = float(np.mean([mbpa.score(t.X_test, t.y_test) for t in tasks]))
        scores[f"adapt_steps={steps},adapt_lr={lr:g}"] = round(accuracy, 4)
        print(
            f"  validation: adapt_steps={steps}, adapt_lr={lr:g}: average accuracy {accuracy:.4f}", flush=True
        )
    best_adapt = max(ADAPT_GRID, key=lambda a: scores[f"adapt_steps={a[0]},adapt_lr={a[1]:g}"])
    return best_lambda, best_adapt, scores


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """R matrix, average accuracy and backward transfer of each method."""
    from sksemiparam.continual import evaluate_stream, permuted_tasks
    from sksemiparam.datasets import load_mnist

    n_tasks, n_train, n_test, epochs = (4, 2_000, 200, 1) if quick else (10, 10_000, 300, 2)
    X_train, y_train = load_mnist(data_dir, subset="train")
    X_test, y_test = load_mnist(data_dir, subset="test")
    X_train = (X_train / 255.0).astype(np.float32)
    X_test = (X_test / 255.0).astype(np.float32)
    tasks = permuted_tasks(
        X_train, y_train, X_test, y_test, n_tasks,
        n_train_per_task=n_train, n_test_per_task=n_test, random_state=0,
    )  # fmt: skip
    ewc_lambda, (adapt_steps, adapt_lr), validation = _select(X_train, y_train, epochs)
    rows, summary = [], {}
    for name, params in METHODS.items():
        if "ewc_lambda" in params:
            params = {**params, "ewc_lambda": ewc_lambda}
        if name.startswith("mbpa"):
            params = {**params, "adapt_steps": adapt_steps, "adapt_lr": adapt_lr}
        start = time.perf_counter()
        result = evaluate_stream(
            _estimator(0, **params),
            tasks,
            classes=np.arange(10),
            epochs=epochs,
            batch_size=1000,
            random_state=0,
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "method": name,
                "n_tasks": n_tasks,
                "n_train_per_task": n_train,
                "n_test_per_task": n_test,
                "epochs_per_task": epochs,
                "params": {k: v for k, v in params.items()},
                "accuracy_matrix": np.round(result.accuracy, 4).tolist(),
                "avg_accuracy": round(result.average_accuracy, 4),
                "bwt": round(result.backward_transfer, 4),
                "fit_seconds": round(result.fit_seconds, 1),
                "total_seconds": round(seconds, 1),
            }
        )
        summary[f"{name}.avg_accuracy"] = round(result.average_accuracy, 4)
        summary[f"{name}.bwt"] = round(result.backward_transfer, 4)
        print(
            f"  {name:<9} avg accuracy {result.average_accuracy:.4f}  BWT {result.backward_transfer:+.4f}  "
            f"({seconds:.0f} s)",
            flush=True,
        )
    summary["ewc_lambda"] = ewc_lambda
    summary["adapt_steps"] = adapt_steps
    summary["adapt_lr"] = adapt_lr
    summary["validation_accuracy"] = validation
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """The accuracy matrix R of each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sksemiparam.continual import StreamResult, plot_accuracy_matrix

    rows = report["results"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5), constrained_layout=True)
    for ax, row in zip(axes.ravel(), rows):
        result = StreamResult(
            np.array(row["accuracy_matrix"]), task_names=[str(i) for i in range(row["n_tasks"])]
        )
        plot_accuracy_matrix(
            result, ax=ax, title=f"{row['method']}: ACC {row['avg_accuracy']:.3f}, BWT {row['bwt']:+.3f}"
        )
    first = rows[0]
    fig.suptitle(
        f"Permuted MNIST, {first['n_tasks']} tasks x {first['n_train_per_task']:,} images, "
        f"{first['epochs_per_task']} epoch(s) per task; R[i, j] = accuracy on task j after task i",
        fontsize=11,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
