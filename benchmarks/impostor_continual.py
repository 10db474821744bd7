"""The review's continual-learning proposal (section 4, Algorithm 1): add/drop centres with eq. (13).

Streams (``sksemiparam.continual``), from MNIST: ``split`` (5 tasks of two digits each, predicted
among all ten classes) and ``permuted`` (5 tasks, each MNIST under its own pixel permutation).
Each task has ``N_TRAIN`` training and ``N_TEST`` test images (``--quick``: 1,000 and 200).
Every variant makes ``PASSES`` passes over each task in batches of 100: those with an add/drop
policy in ``PASSES / 2`` ``partial_fit`` calls, each Algorithm 1's "mega epoch" (one pass over the
slice, add/drop, one fine-tuning pass: ``finetune_epochs=1``), the others in ``PASSES`` calls of
one pass each. Four passes, because with two the naive network did not learn the later tasks of
the split stream (0.5 on the task just trained: one of its two classes). Embedding: MLP
784-256-64, AdamW 1e-3, k = 32; ``SEEDS`` seeds of the models (the streams are fixed). Variants:

- ``full``: ``ImpostorClassifier`` (loose centres) with ``n_add=N_ADD``, ``n_drop=N_DROP``,
  ``max_centers=MAX_CENTERS``, ``redistribute=True``;
- ``no_redistribution``: the same without eq. (13);
- ``no_add_drop``: no policy (``n_add=None``): every example of every pass is a centre (the
  memory grows to every distinct training image seen);
- ``mlp``: a naive network, the same embedding with a softmax layer, trained by the same
  ``partial_fit`` calls;
- ``full_search``, ``no_redistribution_search``, ``no_add_drop_search``: the first three with
  ``candidates=None``, the paper's procedure (each training step searches the nearest centres);
  the others train with the default, 1,024 centres drawn at random per step.

The first call of a stream stores every row of task 1 as a centre (Algorithm 1 starts from the
whole first data set); with a cap, the next pass drops down to it. ``summary``:
``<stream>.<variant>.avg_accuracy`` (mean of R's last row) and ``<stream>.<variant>.bwt``
(backward transfer), means over the seeds with ``_std``, ``<stream>.<variant>.n_centers`` at the
end (seed 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._images import EMBEDDINGS, load_images, softmax_classifier

STREAMS = ("split", "permuted")
N_TASKS = 5
N_TRAIN, N_TEST = 2000, 500
PASSES = 4
SEEDS = (0, 1, 2)
N_ADD, N_DROP, MAX_CENTERS = 200, 100, 2000
VARIANTS = {
    "full": {"n_add": N_ADD, "n_drop": N_DROP, "max_centers": MAX_CENTERS, "redistribute": True},
    "no_redistribution": {
        "n_add": N_ADD,
        "n_drop": N_DROP,
        "max_centers": MAX_CENTERS,
        "redistribute": False,
    },
    "no_add_drop": {"n_add": None},
    "mlp": None,
}
# The same with the paper's training procedure (each step searches the nearest centres) instead of
# the default's candidates drawn at random: the default was chosen on one fit of full MNIST.
VARIANTS.update(
    {f"{name}_search": {**params, "candidates": None} for name, params in list(VARIANTS.items()) if params}
)


def _tasks(stream: str, quick: bool, data_dir: str | None):
    from sksemiparam.continual import permuted_tasks, split_tasks

    X_train, y_train, X_test, y_test = load_images("mnist", data_dir)
    n_train, n_test = (1000, 200) if quick else (N_TRAIN, N_TEST)
    if stream == "permuted":
        return permuted_tasks(
            X_train, y_train, X_test, y_test, N_TASKS,
            n_train_per_task=n_train, n_test_per_task=n_test, random_state=0,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.permutation(np.flatnonzero(y_train == c))[: n_train // 2] for c in range(10)])
    test = np.concatenate([rng.permutation(np.flatnonzero(y_test == c))[: n_test // 2] for c in range(10)])
    return split_tasks(X_train[train], y_train[train], X_test[test], y_test[test], N_TASKS)


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Average accuracy and backward transfer of each variant on each stream."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from sksemiparam import ImpostorClassifier
    from sksemiparam.continual import evaluate_stream

    rows, summary = [], {}
    seeds = SEEDS[:1] if quick else SEEDS
    for stream in STREAMS:
        tasks = _tasks(stream, quick, data_dir)
        for name, params in VARIANTS.items():
            results = []
            for seed in seeds:
                common = {"batch_size": 100, "device": "cpu", "random_state": seed}
                if params is None:
                    model = softmax_classifier("mnist", **common)
                else:
                    model = ImpostorClassifier(**EMBEDDINGS["mnist"], **params, **common)
                # an add/drop call is two passes (the slice, then the fine-tuning pass)
                calls = PASSES // 2 if params is not None and params.get("n_add") else PASSES
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    result = evaluate_stream(
                        model, tasks, classes=np.arange(10), epochs=calls, random_state=seed
                    )
                results.append(result)
                n_centers = int(model.centers_X_.shape[0]) if params is not None else None
                rows.append(
                    {
                        "stream": stream,
                        "variant": name,
                        "seed": seed,
                        "params": params,
                        "partial_fit_calls_per_task": calls,
                        "accuracy_matrix": np.round(result.accuracy, 4).tolist(),
                        "avg_accuracy": round(result.average_accuracy, 4),
                        "bwt": round(result.backward_transfer, 4),
                        "n_centers": n_centers,
                        "fit_seconds": round(result.fit_seconds, 1),
                        "n_train_per_task": int(tasks[0].X_train.shape[0]),
                    }
                )
                print(
                    f"  {stream} {name:<18} seed {seed}: ACC {result.average_accuracy:.4f} "
                    f"BWT {result.backward_transfer:+.4f} centres {n_centers} ({result.fit_seconds:.0f} s)",
                    flush=True,
                )
            for key, short in (("average_accuracy", "avg_accuracy"), ("backward_transfer", "bwt")):
                values = [getattr(r, key) for r in results]
                summary[f"{stream}.{name}.{short}"] = round(float(np.mean(values)), 4)
                summary[f"{stream}.{name}.{short}_std"] = round(float(np.std(values)), 4)
            if params is not None:
                summary[f"{stream}.{name}.n_centers"] = next(
                    r["n_centers"] for r in rows if r["stream"] == stream and r["variant"] == name
                )
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """The accuracy matrix R of every variant on every stream (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sksemiparam.continual import StreamResult, plot_accuracy_matrix

    rows = [r for r in report["results"] if r.get("seed", 0) == 0]
    fig, axes = plt.subplots(len(STREAMS), len(VARIANTS), figsize=(4 * len(VARIANTS), 3.8 * len(STREAMS)),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    for ax, row in zip(axes.ravel(), rows):
        R = np.array(row["accuracy_matrix"])
        plot_accuracy_matrix(
            StreamResult(R, task_names=[str(i) for i in range(len(R))]),
            ax=ax,
            title=f"{row['stream']} / {row['variant']}\nACC {row['avg_accuracy']:.3f}, BWT {row['bwt']:+.3f}",
        )
    fig.savefig(path, dpi=100)
    plt.close(fig)
