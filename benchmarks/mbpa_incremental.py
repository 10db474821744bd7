"""MbPA incremental learning: new classes arrive, rare, in a stream; parametric vs memory vs mixture vs MbPA.

Protocol (Sprechmann et al.'s incremental-learning test with unbalanced data, ImageNet 500 + 500
classes scaled to MNIST and Fashion-MNIST, 5 + 5 classes):

- Split: ``N_VAL_PER_CLASS`` training images of every class are held out as a validation split
  (balanced over the 10 classes, like the test set); the rest are the training rows.
- Phase 1: ``MbPAClassifier`` learns classes 0-4 only: ``PHASE1_PASSES`` passes of ``partial_fit``
  over all their training rows, the 10 classes declared on the first call (``classes=range(10)``),
  so the output layer has 10 units from the start.
- Phase 2: a stream of all training rows of classes 0-4 plus a fixed random 10% of those of classes
  5-9, shuffled afresh each pass, fed to ``partial_fit`` one mini-batch of ``BATCH`` rows per call
  (one optimizer step per call; the index over the memory is refreshed after each call).
- Checkpoints: after 0.1 (the first 10% of the first pass), 1 and 3 passes of phase 2. At each one
  the same fitted model predicts the test set under the four ``inference`` modes, switched with
  ``set_params`` (never retrained): ``parametric`` (g(f(x))), ``memory`` (kernel-weighted vote of the
  K = 32 nearest memory entries), ``mixture`` (the paper's eq. 2) and ``adapt`` (MbPA). Accuracy on
  the test images of the old classes 0-4, of the new classes 5-9, and of all.

Model: ``embedding="mlp"`` 784-256-64 (ReLU) giving the keys, a linear output network 64-10 (like
the paper's ResNet with keys from its penultimate layer), Adam at 1e-3, ``n_neighbors=32``, exact
search, a FIFO memory of ``memory_size`` = the length of one phase-2 pass (about the last pass of
writes: no stale duplicate of a row from an earlier pass once a pass is complete).

Inference hyperparameters are not tuned on the test set: at every checkpoint (and for every seed)
``adapt_steps`` x ``adapt_lr`` x ``adapt_reg`` (``ADAPT_GRID``) and ``mixture_weight``
(``MIXTURE_GRID``) are chosen by accuracy on the validation split, then the test set is predicted
once with the chosen values (recorded in each row). The rate has to be small because the keys are
unnormalised ReLU features with ||h||^2 of a few hundred: the curvature of the neighbours' loss in
the output layer grows with ||h||^2, and the library default ``adapt_lr=0.1`` overshoots.

Training uses one torch thread (``torch.set_num_threads(1)``, restored afterwards): the network is
small, and two threads on a machine where another job runs are many times slower.

``summary`` keys: ``<dataset>.e<epochs>.<mode>.<old|new|all>``, the test accuracy averaged over the
seeds, with ``<dataset>`` in {mnist, fashion}, ``<epochs>`` in {0.1, 1, 3} (passes of phase 2) and
``<mode>`` in {parametric, memory, mixture, adapt}; e.g. ``mnist.e0.1.adapt.new``. Also
``<dataset>.phase1.parametric.old`` (old-class test accuracy at the end of phase 1) and the settings.
Under ``--quick``: 1 seed, 1,000 training images per class, 2,000 test images.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

DATASETS = ("mnist", "fashion")
MODES = ("parametric", "memory", "mixture", "adapt")
CHECKPOINTS = (0.1, 1, 3)  # passes of phase 2
OLD_CLASSES, NEW_CLASSES = tuple(range(5)), tuple(range(5, 10))
NEW_FRACTION = 0.1
PHASE1_PASSES = 10
BATCH = 100
K = 32
ADAPT_GRID = {"adapt_steps": (5, 10), "adapt_lr": (0.001, 0.003, 0.01, 0.03, 0.1), "adapt_reg": (0.1, 1.0)}
MIXTURE_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"seeds": (0,), "n_train_per_class": 1_000, "n_val_per_class": 100, "n_test": 2_000}
    return {"seeds": (0, 1, 2), "n_train_per_class": None, "n_val_per_class": 250, "n_test": None}


def _load(name: str, data_dir: str | None):
    from sksemiparam.datasets import load_fashion_mnist, load_mnist

    load = load_mnist if name == "mnist" else load_fashion_mnist
    X_train, y_train = load(data_dir, subset="train")
    X_test, y_test = load(data_dir, subset="test")
    return (X_train / 255.0).astype(np.float32), y_train, (X_test / 255.0).astype(np.float32), y_test


def _split(y: np.ndarray, n_val: int, n_train: int | None, rng: np.random.Generator):
    """Per class: ``n_val`` validation rows, then ``n_train`` (None: all the rest) training rows."""
    train, val = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(y == c))
        val.append(rows[:n_val])
        train.append(rows[n_val:] if n_train is None else rows[n_val : n_val + n_train])
    return np.concatenate(train), np.concatenate(val)


def _accuracies(clf, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = clf.predict(X)
    old = y < len(OLD_CLASSES)
    return {
        "accuracy_old": float(np.mean(pred[old] == y[old])),
        "accuracy_new": float(np.mean(pred[~old] == y[~old])),
        "accuracy_all": float(np.mean(pred == y)),
    }


def _select(clf, mode: str, X_val: np.ndarray, y_val: np.ndarray) -> tuple[dict[str, Any], float]:
    """The grid point of ``mode`` with the best validation accuracy (first one on ties)."""
    if mode == "adapt":
        grid = [dict(zip(ADAPT_GRID, values)) for values in itertools.product(*ADAPT_GRID.values())]
    elif mode == "mixture":
        grid = [{"mixture_weight": w} for w in MIXTURE_GRID]
    else:
        grid = [{}]
    best, best_score = grid[0], -1.0
    for params in grid:
        clf.set_params(inference=mode, **params)
        score = float(np.mean(clf.predict(X_val) == y_val))
        if score > best_score:
            best, best_score = params, score
    return best, best_score


def _evaluate(clf, data, *, dataset: str, seed: int, epochs: float, rows_seen: int) -> list[dict[str, Any]]:
    X_val, y_val, X_test, y_test = data
    n_new_entries = int((clf.memory_.y >= len(OLD_CLASSES)).sum())
    rows = []
    for mode in MODES:
        start = time.perf_counter()
        params, val_score = _select(clf, mode, X_val, y_val)
        select_s = time.perf_counter() - start
        clf.set_params(inference=mode, **params)
        start = time.perf_counter()
        acc = _accuracies(clf, X_test, y_test)
        rows.append(
            {
                "dataset": dataset,
                "seed": seed,
                "epochs": epochs,
                "phase2_rows_seen": rows_seen,
                "mode": mode,
                **{k: round(v, 4) for k, v in acc.items()},
                "params": params,
                "validation_accuracy": round(val_score, 4),
                "n_test": len(y_test),
                "memory_entries": len(clf.memory_),
                "memory_new_class_entries": n_new_entries,
                "select_seconds": round(select_s, 2),
                "test_predict_seconds": round(time.perf_counter() - start, 2),
            }
        )
        r = rows[-1]
        print(
            f"    e{epochs:<4} {mode:<10} old {r['accuracy_old']:.4f}  new {r['accuracy_new']:.4f}  "
            f"all {r['accuracy_all']:.4f}  {params}",
            flush=True,
        )
    return rows


def _run_one(dataset: str, seed: int, arrays, settings: dict[str, Any]) -> tuple[list[dict], dict]:
    from sksemiparam import MbPAClassifier

    X_train, y_train, X_test, y_test = arrays
    rng = np.random.default_rng(seed)
    train, val = _split(y_train, settings["n_val_per_class"], settings["n_train_per_class"], rng)
    if settings["n_test"] is not None:
        test = rng.choice(len(y_test), settings["n_test"], replace=False)
        X_test, y_test = X_test[test], y_test[test]
    data = (X_train[val], y_train[val], X_test, y_test)

    old = train[np.isin(y_train[train], OLD_CLASSES)]
    new = np.concatenate(
        [
            rng.choice(rows, int(round(NEW_FRACTION * len(rows))), replace=False)
            for rows in (train[y_train[train] == c] for c in NEW_CLASSES)
        ]
    )
    stream = np.concatenate([old, new])
    clf = MbPAClassifier(
        embedding="mlp",
        hidden_layer_sizes=(256,),
        embedding_dim=64,
        head_layer_sizes=(),
        memory_size=len(stream),
        n_neighbors=K,
        index="exact",
        batch_size=BATCH,
        learning_rate=1e-3,
        device="cpu",
        random_state=seed,
    )
    timing = {"phase1_seconds": 0.0, "phase2_train_seconds": 0.0}

    start = time.perf_counter()
    for _ in range(PHASE1_PASSES):
        clf.partial_fit(X_train[old], y_train[old], classes=np.arange(10))
    timing["phase1_seconds"] = time.perf_counter() - start
    clf.set_params(inference="parametric")
    phase1_old = _accuracies(clf, X_test, y_test)["accuracy_old"]
    print(
        f"  {dataset} seed {seed}: phase 1 ({len(old)} rows x {PHASE1_PASSES} passes, "
        f"{timing['phase1_seconds']:.0f} s), parametric old-class accuracy {phase1_old:.4f}; "
        f"phase 2 stream {len(old)} old + {len(new)} new rows",
        flush=True,
    )

    rows = []
    order_rng = np.random.default_rng([seed, 1])
    batches_per_pass = -(-len(stream) // BATCH)
    first_checkpoint = max(1, int(round(CHECKPOINTS[0] * batches_per_pass)))
    rows_seen = 0
    for epoch in range(1, max(CHECKPOINTS) + 1):
        order = order_rng.permutation(stream)
        for b in range(batches_per_pass):
            ids = order[b * BATCH : (b + 1) * BATCH]
            start = time.perf_counter()
            clf.partial_fit(X_train[ids], y_train[ids])
            timing["phase2_train_seconds"] += time.perf_counter() - start
            rows_seen += len(ids)
            if epoch == 1 and b + 1 == first_checkpoint:
                rows += _evaluate(
                    clf, data, dataset=dataset, seed=seed, epochs=CHECKPOINTS[0], rows_seen=rows_seen
                )
        if epoch in CHECKPOINTS:
            rows += _evaluate(clf, data, dataset=dataset, seed=seed, epochs=epoch, rows_seen=rows_seen)
    info = {
        "phase1_parametric_old": phase1_old,
        "n_old_stream": len(old),
        "n_new_stream": len(new),
        "memory_size": len(stream),
        "n_val": len(val),
        "n_test": len(y_test),
        **timing,
    }
    for r in rows:
        r["memory_size"] = len(stream)
    return rows, info


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Test accuracy on old and new classes of the four inference modes at each checkpoint."""
    import torch

    settings = _settings(quick)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows, summary, infos = [], {}, {}
    try:
        for dataset in DATASETS:
            arrays = _load(dataset, data_dir)
            for seed in settings["seeds"]:
                start = time.perf_counter()
                seed_rows, info = _run_one(dataset, seed, arrays, settings)
                info["total_seconds"] = round(time.perf_counter() - start, 1)
                print(f"  {dataset} seed {seed}: {info['total_seconds']:.0f} s", flush=True)
                rows += seed_rows
                infos[(dataset, seed)] = info
    finally:
        torch.set_num_threads(threads)

    for dataset in DATASETS:
        ds_infos = [infos[(dataset, s)] for s in settings["seeds"]]
        summary[f"{dataset}.phase1.parametric.old"] = round(
            float(np.mean([i["phase1_parametric_old"] for i in ds_infos])), 4
        )
        for epochs in CHECKPOINTS:
            for mode in MODES:
                sel = [
                    r for r in rows if r["dataset"] == dataset and r["epochs"] == epochs and r["mode"] == mode
                ]
                for part in ("old", "new", "all"):
                    summary[f"{dataset}.e{epochs}.{mode}.{part}"] = round(
                        float(np.mean([r[f"accuracy_{part}"] for r in sel])), 4
                    )
        for key in ("n_old_stream", "n_new_stream", "memory_size", "n_val", "n_test"):
            summary[f"{dataset}.{key}"] = int(np.mean([i[key] for i in ds_infos]))
        for key in ("phase1_seconds", "phase2_train_seconds", "total_seconds"):
            summary[f"{dataset}.{key}_per_seed"] = round(float(np.mean([i[key] for i in ds_infos])), 1)
    summary.update(
        {
            "seeds": list(settings["seeds"]),
            "n_train_per_class": settings["n_train_per_class"] or "all (minus validation)",
            "n_val_per_class": settings["n_val_per_class"],
            "phase1_passes": PHASE1_PASSES,
            "new_fraction": NEW_FRACTION,
            "batch_size": BATCH,
            "n_neighbors": K,
            "memory_size": "one phase-2 pass (see <dataset>.memory_size)",
            "adapt_grid": {k: list(v) for k, v in ADAPT_GRID.items()},
            "mixture_grid": list(MIXTURE_GRID),
            "tuning": "adapt and mixture hyperparameters chosen per checkpoint and seed on the validation "
            "split held out from the training data, never on the test set",
            "torch_threads_used": 1,
        }
    )
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Accuracy on new and old classes vs phase-2 passes, one line per mode, per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(11, 4.2 * len(datasets)), squeeze=False, constrained_layout=True
    )
    styles = {"parametric": "o-", "memory": "s--", "mixture": "^-.", "adapt": "D-"}
    n_seeds = len({r["seed"] for r in rows})
    for i, dataset in enumerate(datasets):
        for j, part in enumerate(("new", "old")):
            ax = axes[i, j]
            for mode in MODES:
                means, stds = [], []
                for epochs in CHECKPOINTS:
                    acc = [
                        r[f"accuracy_{part}"]
                        for r in rows
                        if r["dataset"] == dataset and r["epochs"] == epochs and r["mode"] == mode
                    ]
                    means.append(np.mean(acc))
                    stds.append(np.std(acc))
                label = "MbPA (adapt)" if mode == "adapt" else mode
                ax.errorbar(CHECKPOINTS, means, yerr=stds, fmt=styles[mode], capsize=3, label=label)
            ax.set_xscale("log")
            ax.set_xticks(CHECKPOINTS, [str(c) for c in CHECKPOINTS])
            ax.set_xlabel("phase-2 passes (epochs)")
            ax.set_ylabel("test accuracy")
            classes = "5-9 (10% of their data)" if part == "new" else "0-4"
            ax.set_title(f"{dataset}: {part} classes {classes}")
            ax.grid(True, alpha=0.3)
            if i == 0 and j == 0:
                ax.legend()
    fig.suptitle(
        f"Incremental learning. Phase 1: classes 0-4; phase 2: all of 0-4 + 10% of 5-9 "
        f"(mean \u00b1 std over {n_seeds} seed(s))",
        fontsize=11,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
