"""Why Meta-Neighborhoods loses to its vanilla network on elevators and pol: one change at a time.

Issue 19, part 5. In ``meta-neighborhoods-regression`` (the paper's Table 2 protocol) the network
with the dictionary and its one inner step has a higher test MSE than the same network without
them on elevators and pol. Each ``VARIANTS`` entry changes one thing from that benchmark's
Meta-Neighborhoods (``mn``: S = 1000 entries in input space, gamma = 10, one second-order inner step
with a learnable scalar rate starting at 0.1); ``vanilla`` is the network alone
(``n_inner_steps=0``):

- dictionary size: ``entries_100``, ``entries_5000``;
- the softmax temperature of the attention over the entries: ``gamma_1``, ``gamma_100``;
- the inner step: ``inner_lr_0.01`` and ``inner_lr_1`` (its initial rate), ``inner_lr_diagonal``
  (a learnable rate per weight, as Meta-SGD), ``first_order`` (no second-order terms);
- where the neighbourhoods live: ``embedded``, the dictionary in a learned 32-dimensional embedding
  space (an MLP of 128) instead of the standardised input space;
- ``raw_features``: the features as ``load_uci`` ships them (mean-centred, not scaled to unit
  variance), for the dictionary's distances and the network alike.

Protocol: the first 3 of each table's 10 fixed 90/10 splits, features standardised on the training
rows (except ``raw_features``), every model as ``meta-neighborhoods-regression`` builds it (3 layers
of 128, AdamW 1e-3, batch 128, early stopping on 10% of the training rows, patience 10, at most 300
epochs), seed = split; MSE on the standardised target scale. Two worker processes with one thread
each; finished fits are kept in ``OUT/meta-neighborhoods-variants-cells.jsonl`` (fingerprint: the
source Meta-Neighborhoods runs and the variant's parameters), so a stopped run resumes: on this
project's 2-core CPU a Meta-Neighborhoods fit takes ~8 s per epoch on these tables, so the whole
run is several hours (``--quick``: 3 fits of 3 epochs on one split of pol).

``summary``: ``<dataset>.<variant>_mse`` (mean over splits) with ``_std``; ``<dataset>.<variant>_gain``
(vanilla's MSE minus the variant's, mean over splits: > 0 is better than vanilla);
``<dataset>.<variant>_epochs``; ``fit_seconds.<variant>`` (mean per fit).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import tables as T
from .meta_neighborhoods_regression import _estimator

DATASETS = ("elevators", "pol")
SPLITS = 3
VARIANTS: dict[str, dict[str, Any]] = {
    "vanilla": {"n_inner_steps": 0},
    "mn": {},
    "entries_100": {"n_entries": 100},
    "entries_5000": {"n_entries": 5000},
    "gamma_1": {"gamma": 1.0},
    "gamma_100": {"gamma": 100.0},
    "inner_lr_0.01": {"inner_lr_init": 0.01},
    "inner_lr_1": {"inner_lr_init": 1.0},
    "inner_lr_diagonal": {"inner_lr": "diagonal"},
    "first_order": {"first_order": True},
    "embedded": {"embedding": "mlp"},
    "raw_features": {},
}
QUICK = {"datasets": ("pol",), "splits": 1, "variants": ("vanilla", "mn", "entries_100"), "max_epochs": 3}


def _fingerprint(variant: str, max_epochs: int | None = None) -> str:
    described = repr((sorted(VARIANTS[variant].items()), max_epochs)).encode()
    return f"{T.fingerprint('MetaNeighborhoodsRegressor')}-{hashlib.sha256(described).hexdigest()[:8]}"


def run_fold(dataset: str, variant: str, seed: int, split: int, data_dir, max_epochs=None) -> dict[str, Any]:
    """One fit of ``variant`` on split ``split`` of ``dataset`` (``seed`` = ``split``)."""
    import torch
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from sksemiparam.datasets import load_uci

    torch.set_num_threads(1)
    X_train, X_test, y_train, y_test = load_uci(dataset, data_dir, split=split)
    if variant != "raw_features":
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    X_train, X_test = X_train.astype(np.float32), X_test.astype(np.float32)
    params = dict(VARIANTS[variant], num_threads=1)
    if max_epochs is not None:
        params["max_epochs"] = max_epochs
    model = _estimator(seed, **params)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        pred = model.predict(X_test)
    mse = float(np.mean(((pred - y_test) / y_train.std(0)) ** 2))
    return {
        "table": dataset,
        "model": variant,
        "seed": seed,
        "fold": split,
        "fingerprint": _fingerprint(variant, max_epochs),
        "score": round(mse, 6),
        "fit_seconds": round(seconds, 2),
        "n_iter": int(model.n_iter_),
    }


def run(quick: bool, data_dir: str | None, out: str | None = None) -> dict[str, Any]:
    datasets = QUICK["datasets"] if quick else DATASETS
    splits = QUICK["splits"] if quick else SPLITS
    variants = QUICK["variants"] if quick else tuple(VARIANTS)
    name = "meta-neighborhoods-variants-cells" + ("-quick" if quick else "")
    cells_path = Path(out or ".") / f"{name}.jsonl"
    wanted = [(d, v, k, k) for d in datasets for v in variants for k in range(splits)]
    max_epochs = QUICK["max_epochs"] if quick else None
    worker = partial(run_fold, data_dir=data_dir, max_epochs=max_epochs)
    fingerprint = partial(_fingerprint, max_epochs=max_epochs)
    sizes = {d: {"elevators": 16_599, "pol": 15_000}[d] for d in datasets}
    done = T.run_cells(wanted, cells_path, fingerprint, worker, sizes)
    rows = [
        {
            "dataset": d,
            "variant": v,
            "split": k,
            "test_mse": done[d, v, k, k]["score"],
            "fit_seconds": done[d, v, k, k]["fit_seconds"],
            "epochs": done[d, v, k, k]["n_iter"],
        }
        for d in datasets
        for v in variants
        for k in range(splits)
    ]
    return {"results": rows, "summary": summarise(rows, datasets, variants)}


def summarise(rows, datasets, variants) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for d in datasets:
        base = np.array([r["test_mse"] for r in rows if r["dataset"] == d and r["variant"] == "vanilla"])
        for v in variants:
            mine = [r for r in rows if r["dataset"] == d and r["variant"] == v]
            mse = np.array([r["test_mse"] for r in mine])
            summary[f"{d}.{v}_mse"] = round(float(mse.mean()), 5)
            summary[f"{d}.{v}_mse_std"] = round(float(mse.std()), 5)
            summary[f"{d}.{v}_gain"] = round(float(np.mean(base - mse)), 5)
            summary[f"{d}.{v}_epochs"] = round(float(np.mean([r["epochs"] for r in mine])), 1)
    for v in variants:
        summary[f"fit_seconds.{v}"] = round(
            float(np.mean([r["fit_seconds"] for r in rows if r["variant"] == v])), 2
        )
    return summary
