"""Continual learning side by side with Avalanche: the same streams, networks, passes and test sets.

Issue 20, part 1. One process builds each stream once and trains every method on it, in turn:

- ``permuted_mnist``: 10 tasks, each MNIST under its own pixel permutation (task 0: the
  identity), ``N_TRAIN_PERMUTED`` training images per task, all 10,000 test images per task;
- ``split_mnist`` / ``split_fashion``: 5 tasks of two classes each ({0, 1}, {2, 3}, ...), all
  training and test images, one 10-way output for every task (class-incremental: nothing tells the
  model which task a test image comes from).

Every method trains the same network, 784-256-256-10 with ReLUs (Avalanche's ``SimpleMLP`` with
two hidden layers of 256; ``MbPAClassifier(embedding="identity", head_layer_sizes=(256, 256))``
for ours), with Adam at learning rate 1e-3, mini-batches of 100 and ``EPOCHS`` pass(es) over each
task, in one process with the same torch threads. Methods (the summary's names):

- ``avalanche_naive``, ``avalanche_ewc`` (``mode="separate"``), ``avalanche_replay`` (its
  experience-balanced buffer of ``MEMORY`` rows), ``avalanche_gdumb`` (a class-balanced buffer of
  ``MEMORY`` rows, the network retrained from scratch on it after each task for ``GDUMB_EPOCHS``
  passes: as many steps as a pass over 10,000 rows);
- ``mlp``: ``MbPAClassifier(inference="parametric")`` through ``partial_fit`` alone (one call per
  task and pass; each call is one pass in mini-batches of 100);
- ``mlp_ewc``: the same with ``ewc_lambda`` and ``end_task`` after each task;
- ``mbpa`` / ``mbpa_ewc``: ``MbPAClassifier`` with ``memory_size=MEMORY`` (its default local
  adaptation: 5 steps at rate 0.1 on the 32 nearest entries; keys are the pixels, as in the
  paper's permuted MNIST), without and with EWC; its default memory keeps the newest rows;
- ``mbpa_balanced`` / ``mbpa_balanced_ewc``: the same with ``memory_policy="class_balanced"``
  (equal shares of the classes seen, each a uniform sample of its class);
- ``impostor``: ``ImpostorClassifier``'s add/drop mode (loose centres; embedding 784-256-256, as
  wide as the others' hidden layers), ``MEMORY`` centres: the first ``partial_fit`` stores its
  1,000 rows, every later call of 1,000 rows adds the 10 worst-predicted and drops the 10
  best-predicted centres, ``finetune_epochs=0`` so that it too makes one pass per task.

The EWC strength of each side is chosen on a validation stream of training images only (3 permuted
tasks, or the 5 split tasks trained on 50,000 training images and tested on the other 10,000;
seed 0, average accuracy), Avalanche over ``EWC_GRID`` and ours over the same grid converted:
Avalanche's importance is the squared gradient of a mini-batch's mean loss, about 1/B of the
per-row squared gradient our ``end_task`` averages, and its penalty has no 1/2, so
``ewc_lambda = 2 * lambda_avalanche / B`` is the same penalty for B = 100.

Differences that remain: Avalanche resets Adam's moments at each task (its default), ours keep
them. ``MbPAClassifier``'s adapted prediction (5 gradient steps of the 2-layer output network per
test image) costs ~2 ms per image here, so its methods are scored on ``ADAPTED_TEST`` test images
per task drawn at random (all of a task's when it has fewer), and only in the cells the metrics
need (R[i, i] and the last row); the others are NaN (``null`` in the JSON).

``summary``: ``<stream>.<method>.avg_accuracy`` and ``.bwt`` (mean over seeds), with ``_std``
(over seeds), ``<stream>.<method>.fit_seconds``, and ``<stream>.ewc_lambda.<side>``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

SEEDS = (0, 1, 2)
HIDDEN = (256, 256)
BATCH = 100
LEARNING_RATE = 1e-3
EPOCHS = 1
MEMORY = 1000
N_TRAIN_PERMUTED = 10_000
EWC_GRID = (10.0, 100.0, 1e3, 1e4, 1e5, 1e6)  # Avalanche's lambda; ours is 2 lambda / BATCH
GDUMB_EPOCHS = 10  # passes over its buffer of MEMORY rows: as many steps per task as a pass over 10,000
IMPOSTOR_CHUNK = 1000
METHODS = (
    "avalanche_naive",
    "avalanche_ewc",
    "avalanche_replay",
    "avalanche_gdumb",
    "mlp",
    "mlp_ewc",
    "mbpa",
    "mbpa_ewc",
    "mbpa_balanced",
    "mbpa_balanced_ewc",
    "impostor",
)
# MbPA's adapted predictions (~2 ms per test image with this network): the cells the metrics read
# (R[i, i] and the last row), on ADAPTED_TEST test images per task drawn at random.
ADAPTED = {"mbpa", "mbpa_ewc", "mbpa_balanced", "mbpa_balanced_ewc"}
ADAPTED_TEST = 2000


# ------------------------------------------------------------------------------------- streams
def _load(name, data_dir):
    from sksemiparam.datasets import load_fashion_mnist, load_mnist

    load = load_mnist if name == "mnist" else load_fashion_mnist
    X_train, y_train = load(data_dir, subset="train")
    X_test, y_test = load(data_dir, subset="test")
    return (
        (X_train / 255.0).astype(np.float32),
        y_train.astype(np.int64),
        (X_test / 255.0).astype(np.float32),
        y_test.astype(np.int64),
    )


def _streams(data_dir, quick):
    """{stream: (tasks, validation tasks)}: the tasks a method learns and is tested on, and a
    stream of training images only for choosing the EWC strength."""
    from sksemiparam.continual import permuted_tasks, split_tasks

    n_perm, n_test = (1_000, 1_000) if quick else (N_TRAIN_PERMUTED, None)
    streams = {}
    X_train, y_train, X_test, y_test = _load("mnist", data_dir)
    rows = np.random.default_rng(1).permutation(X_train.shape[0])
    fit_rows, val_rows = rows[:15_000], rows[15_000:21_000]
    streams["permuted_mnist"] = (
        permuted_tasks(X_train, y_train, X_test, y_test, 3 if quick else 10,
                       n_train_per_task=n_perm, n_test_per_task=n_test, random_state=0),
        permuted_tasks(X_train[fit_rows], y_train[fit_rows], X_train[val_rows], y_train[val_rows], 3,
                       n_train_per_task=min(n_perm, 5_000), n_test_per_task=2_000, random_state=1),
    )  # fmt: skip
    for name, data in (("split_mnist", "mnist"), ("split_fashion", "fashion")):
        if data == "fashion":
            X_train, y_train, X_test, y_test = _load(data, data_dir)
        if quick:  # every fifth row
            X_train, y_train, X_test, y_test = X_train[::5], y_train[::5], X_test[::5], y_test[::5]
        cut = X_train.shape[0] * 5 // 6
        streams[name] = (
            split_tasks(X_train, y_train, X_test, y_test, n_tasks=5),
            split_tasks(X_train[:cut], y_train[:cut], X_train[cut:], y_train[cut:], n_tasks=5),
        )
    return streams


# ------------------------------------------------------------------------------------ methods
def _ours(method, seed, ewc_lambda):
    from sksemiparam import ImpostorClassifier, MbPAClassifier

    common = {"batch_size": BATCH, "learning_rate": LEARNING_RATE, "device": "cpu", "random_state": seed}
    if method == "impostor":
        return ImpostorClassifier(
            hidden_layer_sizes=HIDDEN[:1], embedding_dim=HIDDEN[1], n_add=10, n_drop=10,
            max_centers=MEMORY, finetune_epochs=0, index="exact", **common,
        )  # fmt: skip
    params = {"embedding": "identity", "head_layer_sizes": HIDDEN, "index": "exact", **common}
    if method in ("mlp", "mlp_ewc"):
        params["inference"] = "parametric"
    else:
        params["memory_size"] = MEMORY
        params["memory_policy"] = "class_balanced" if "balanced" in method else "fifo"
    if "ewc" in method:
        params["ewc_lambda"] = ewc_lambda
    return MbPAClassifier(**params)


def _run_ours(method, tasks, seed, ewc_lambda):
    """Accuracy matrix R and fit seconds of one of our estimators on ``tasks`` (the protocol of
    ``sksemiparam.continual.evaluate_stream``, with only the cells ``ADAPTED`` methods need)."""
    model = _ours(method, seed, ewc_lambda)
    rng = np.random.default_rng(seed)
    chunk = IMPOSTOR_CHUNK if method == "impostor" else None
    T = len(tasks)
    R = np.full((T, T), np.nan)
    fit_seconds, first = 0.0, True
    tested = [np.arange(len(t.y_test)) for t in tasks]
    if method in ADAPTED:
        draw = np.random.default_rng(0)
        tested = [np.sort(draw.permutation(r)[:ADAPTED_TEST]) for r in tested]
    for i, task in enumerate(tasks):
        n = len(task.y_train)
        for _ in range(EPOCHS):
            order = rng.permutation(n)
            for start in range(0, n, chunk or n):
                rows = order[start : start + (chunk or n)]
                tic = time.perf_counter()
                kwargs = {"classes": np.arange(10)} if first else {}
                model.partial_fit(task.X_train[rows], task.y_train[rows], **kwargs)
                fit_seconds += time.perf_counter() - tic
                first = False
        if "ewc" in method:
            tic = time.perf_counter()
            model.end_task(task.X_train, task.y_train)
            fit_seconds += time.perf_counter() - tic
        for j, other in enumerate(tasks):
            if method not in ADAPTED or j == i or i == T - 1:
                rows = tested[j]
                R[i, j] = float(np.mean(model.predict(other.X_test[rows]) == other.y_test[rows]))
    return R, fit_seconds


def _avalanche():
    """Import Avalanche (the ``compare`` extra). torchvision's wheel for this torch may be a CUDA
    build whose compiled operators do not load next to a CPU torch; Avalanche imports torchvision
    but uses none of them here, so their schemas are declared first when they are missing."""
    import torch

    for op in ("nms", "qnms"):
        try:
            schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            torch.library.define(f"torchvision::{op}", schema)
        except RuntimeError:  # torchvision's own operators are there
            pass
    import avalanche.training as strategies
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.training.plugins import EvaluationPlugin

    return strategies, tensors_benchmark, EvaluationPlugin


def _run_avalanche(method, tasks, seed, ewc_lambda):
    import torch
    from torch import nn

    strategies, tensors_benchmark, EvaluationPlugin = _avalanche()
    torch.manual_seed(seed)
    layers, width = [], tasks[0].X_train.shape[1]
    for h in HIDDEN:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    stream = tensors_benchmark(
        train_tensors=[(torch.from_numpy(t.X_train), torch.from_numpy(t.y_train)) for t in tasks],
        test_tensors=[(torch.from_numpy(t.X_test[:1]), torch.from_numpy(t.y_test[:1])) for t in tasks],
        task_labels=[0] * len(tasks),
    )
    kind = {
        "avalanche_naive": (strategies.Naive, {}),
        "avalanche_ewc": (strategies.EWC, {"ewc_lambda": ewc_lambda, "mode": "separate"}),
        "avalanche_replay": (strategies.Replay, {"mem_size": MEMORY}),
        "avalanche_gdumb": (strategies.GDumb, {"mem_size": MEMORY}),
    }
    cls, extra = kind[method]
    epochs = GDUMB_EPOCHS * EPOCHS if method == "avalanche_gdumb" else EPOCHS
    strategy = cls(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=LEARNING_RATE),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=BATCH,
        train_epochs=epochs,
        eval_mb_size=1000,
        device="cpu",
        evaluator=EvaluationPlugin(loggers=[]),
        **extra,
    )
    T = len(tasks)
    R = np.empty((T, T))
    fit_seconds = 0.0
    for i, experience in enumerate(stream.train_stream):
        tic = time.perf_counter()
        strategy.train(experience)
        fit_seconds += time.perf_counter() - tic
        trained = strategy.model  # GDumb trains a fresh copy of the initial network each time
        trained.eval()
        with torch.no_grad():
            for j, other in enumerate(tasks):
                predicted = trained(torch.from_numpy(other.X_test)).argmax(1).numpy()
                R[i, j] = float(np.mean(predicted == other.y_test))
    return R, fit_seconds


def _run(method, tasks, seed, ewc_lambda=None):
    from sksemiparam.continual import StreamResult

    runner = _run_avalanche if method.startswith("avalanche") else _run_ours
    R, fit_seconds = runner(method, tasks, seed, ewc_lambda)
    known = np.nan_to_num(R)  # the metrics read R[i, i] and the last row only
    result = StreamResult(known, task_names=[t.name for t in tasks], fit_seconds=fit_seconds)
    return R, result


def _select_ewc(validation) -> tuple[dict[str, float], dict[str, float]]:
    """The EWC strength of each side with the best average accuracy on the validation stream."""
    chosen, scores = {}, {}
    for side, method, convert in (
        ("avalanche", "avalanche_ewc", lambda lam: lam),
        ("ours", "mlp_ewc", lambda lam: 2 * lam / BATCH),
    ):
        for lam in EWC_GRID:
            _, result = _run(method, validation, 0, convert(lam))
            scores[f"{side}.lambda_{lam:g}"] = round(result.average_accuracy, 4)
            print(f"  validation {side} lambda={convert(lam):g}: {result.average_accuracy:.4f}", flush=True)
        best = max(EWC_GRID, key=lambda lam: scores[f"{side}.lambda_{lam:g}"])
        chosen[side] = convert(best)
    return chosen, scores


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(2)
    seeds = SEEDS[:1] if quick else SEEDS
    rows, summary = [], {}
    for stream, (tasks, validation) in _streams(data_dir, quick).items():
        print(f"{stream}: {len(tasks)} tasks", flush=True)
        ewc, scores = _select_ewc(validation)
        summary[f"{stream}.ewc_lambda.avalanche"] = ewc["avalanche"]
        summary[f"{stream}.ewc_lambda.ours"] = ewc["ours"]
        summary[f"{stream}.ewc_validation"] = scores
        for method in METHODS:
            lam = ewc["avalanche"] if method == "avalanche_ewc" else ewc["ours"]
            results = []
            for seed in seeds:
                R, result = _run(method, tasks, seed, lam if "ewc" in method else None)
                results.append(result)
                rows.append(
                    {
                        "stream": stream,
                        "method": method,
                        "seed": seed,
                        "n_tasks": len(tasks),
                        "ewc_lambda": lam if "ewc" in method else None,
                        "accuracy_matrix": [
                            [None if np.isnan(v) else round(float(v), 4) for v in r] for r in R
                        ],
                        "avg_accuracy": round(result.average_accuracy, 4),
                        "bwt": round(result.backward_transfer, 4),
                        "fit_seconds": round(result.fit_seconds, 2),
                    }
                )
                print(
                    f"  {method:<17} seed {seed}: avg accuracy {result.average_accuracy:.4f}  "
                    f"BWT {result.backward_transfer:+.4f}  fit {result.fit_seconds:.1f} s",
                    flush=True,
                )
            for key in ("average_accuracy", "backward_transfer", "fit_seconds"):
                values = [getattr(r, key) for r in results]
                short = {"average_accuracy": "avg_accuracy", "backward_transfer": "bwt"}.get(key, key)
                summary[f"{stream}.{method}.{short}"] = round(float(np.mean(values)), 4)
                if key != "fit_seconds":
                    summary[f"{stream}.{method}.{short}_std"] = round(float(np.std(values)), 4)
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Top: average accuracy after the last task per method (bars, spread over seeds). Below, one
    row per stream: each method's accuracy matrix R for seed 0 (rows: after training task i;
    columns: task j; blank: a cell not measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    streams = list(dict.fromkeys(r["stream"] for r in report["results"]))
    fig = plt.figure(figsize=(2.3 * len(METHODS), 4.5 + 2.6 * len(streams)), constrained_layout=True)
    top, *rows = fig.subfigures(1 + len(streams), 1, height_ratios=[4.5] + [2.6] * len(streams))
    for ax, stream in zip(np.atleast_1d(top.subplots(1, len(streams))), streams):
        means = [summary[f"{stream}.{m}.avg_accuracy"] for m in METHODS]
        spread = [summary[f"{stream}.{m}.avg_accuracy_std"] for m in METHODS]
        colors = ["tab:gray" if m.startswith("avalanche") else "tab:blue" for m in METHODS]
        ax.bar(range(len(METHODS)), means, yerr=spread, color=colors, capsize=3)
        ax.set_xticks(range(len(METHODS)), [m.replace("avalanche_", "av. ") for m in METHODS], rotation=60)
        ax.set_ylim(0, 1)
        ax.set_title(f"{stream}: average accuracy after the last task")
    for subfig, stream in zip(rows, streams):
        axes = np.atleast_1d(subfig.subplots(1, len(METHODS)))
        for ax, method in zip(axes, METHODS):
            (row,) = [
                r for r in report["results"] if (r["stream"], r["method"], r["seed"]) == (stream, method, 0)
            ]
            R = np.array([[np.nan if v is None else v for v in cells] for cells in row["accuracy_matrix"]])
            ax.imshow(np.ma.masked_invalid(R), vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{method.replace('avalanche_', 'av. ')}\nACC {row['avg_accuracy']:.2f}", fontsize=8)
        subfig.suptitle(f"{stream}: accuracy matrices, seed 0", fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)
