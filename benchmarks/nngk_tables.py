"""NNGK trained as ModernNCA trains its model: each change alone against today's defaults, on real tables.

Issue 19, part 1. ModernNCA (Ye et al., ICLR 2025) is a soft nearest-neighbour classifier over a
learned embedding, NNGK's family, that competes with tuned gradient boosting on hundreds of tables.
Its recipe differs from NNGK's defaults in several places; each ``VARIANTS`` entry changes one of
them (the ``default`` row is ``NNGKClassifier()`` as it is):

- ``learn_sigma``: a trained kernel width (ModernNCA's temperature is fixed at 1, but its
  embedding's scale is free to change, which a fixed sigma is not for a kernel);
- ``candidates_half``: vote over half the stored rows each step (ModernNCA's sampling rate, 0.5)
  instead of 128 of them;
- ``batch_norm`` / ``dropout``: the embedding's hidden layer with batch normalisation, or with
  dropout 0.1 (ModernNCA's MLP blocks have both);
- ``plr``: PLR embeddings of the numerical features (Gorishniy et al., 2022) before the embedding
  network, with ``rtdl_num_embeddings``' defaults (48 frequencies at scale 0.01, 24 dimensions per
  feature, lite); ModernNCA tunes these per table;
- ``modernnca_net``: ModernNCA's default network, PLR-lite then one linear map to 128 dimensions;
- ``modernnca_optimizer``: its optimisation, AdamW with learning rate 0.01 and weight decay 2e-4;
- ``early_stopping``: stop on a validation split's accuracy (10% held out, patience 10 epochs);
- ``dense_predict``: predict with every stored row voting (``n_neighbors=None``), as ModernNCA does,
  instead of the 32 nearest;
- ``weight_decay``: ModernNCA's weight decay 2e-4 alone (the learning rate left at 1e-3);
- ``epochs_200``: up to 200 epochs (ModernNCA's budget) instead of 100;
- ``wider``: two hidden layers of 256 and a 128-dimensional embedding (ModernNCA tunes its width
  between 64 and 1024).

Protocol: the classification tables of the ``tables`` benchmark, each capped at ``MAX_ROWS`` rows
(stratified, seed 0) so that a variant costs minutes, 3-fold stratified CV x 3 seeds, each variant
in ``make_pipeline(StandardScaler(), NNGKClassifier(random_state=seed, **changes))``, two worker
processes with one thread each. Finished folds are kept in ``OUT/nngk-tables-cells.jsonl`` with a
fingerprint of the source NNGK runs and of the variant's parameters.

``summary``: ``score.<table>.<variant>``; per variant ``mean_score.<variant>``,
``mean_gain.<variant>`` (mean over tables of its score minus the default's),
``win_tie_loss.<variant>`` against the default (a tie: within the larger seed spread) and
``rank.<variant>`` (average rank among the variants); ``fit_seconds.<variant>`` (mean per fold).
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import tables as T

MAX_ROWS = 2_000
QUICK_TABLES = ("sonar", "pima", "vehicle")


def tabular_embedding(in_features: int, embedding_dim: int, **options):
    """An ``embedding`` factory: NNGK's MLP embedding (hidden layer 128, no final ReLU) with
    ``MLPEmbedding``'s options (``batch_norm``, ``dropout``, ``periodic``, ``hidden_layer_sizes``)."""
    from sksemiparam.nn import MLPEmbedding

    options.setdefault("hidden_layer_sizes", (128,))
    return MLPEmbedding(
        in_features=in_features, embedding_dim=embedding_dim, final_activation=False, **options
    )


PLR = {"n_frequencies": 48, "frequency_scale": 0.01, "d_embedding": 24, "lite": True}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "learn_sigma": {"learn_sigma": True},
    "candidates_half": {"candidates": 0.5},
    "batch_norm": {"embedding": partial(tabular_embedding, batch_norm=True)},
    "dropout": {"embedding": partial(tabular_embedding, dropout=0.1)},
    "plr": {"embedding": partial(tabular_embedding, periodic=PLR)},
    "modernnca_net": {
        "embedding": partial(tabular_embedding, periodic=PLR, hidden_layer_sizes=()),
        "embedding_dim": 128,
    },
    "modernnca_optimizer": {"learning_rate": 0.01, "weight_decay": 2e-4},
    "early_stopping": {"early_stopping": True},
    "dense_predict": {"n_neighbors": None},
    "weight_decay": {"weight_decay": 2e-4},
    "epochs_200": {"max_epochs": 200},
    "wider": {"hidden_layer_sizes": (256, 256), "embedding_dim": 128},
}


def _describe(value) -> str:
    """A stable text of a parameter value (a partial's repr holds its function's memory address)."""
    if isinstance(value, partial):
        return f"{value.func.__name__}({sorted(value.keywords.items())})"
    return repr(value)


def _fingerprint(variant: str, estimator: str = "NNGKClassifier", variants=None) -> str:
    variants = VARIANTS if variants is None else variants
    described = repr([(k, _describe(v)) for k, v in sorted(variants[variant].items())]).encode()
    return f"{T.fingerprint(estimator)}-{hashlib.sha256(described).hexdigest()[:8]}"


def _model(estimator: str, params: dict[str, Any], seed: int):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import sksemiparam

    return make_pipeline(StandardScaler(), getattr(sksemiparam, estimator)(random_state=seed, **params))


def run_fold(
    table: str,
    variant: str,
    seed: int,
    fold: int,
    data_dir: str | None,
    estimator: str = "NNGKClassifier",
    variants=None,
) -> dict[str, Any]:
    variants = VARIANTS if variants is None else variants
    row = {
        "table": table,
        "model": variant,
        "seed": seed,
        "fold": fold,
        "fingerprint": _fingerprint(variant, estimator, variants),
    }
    row.update(
        T.fit_and_score(_model(estimator, variants[variant], seed), table, seed, fold, data_dir, MAX_ROWS)
    )
    return row


def run(quick: bool, data_dir: str | None, out: str | None = None) -> dict[str, Any]:
    return run_variants("NNGKClassifier", VARIANTS, "nngk-tables", quick, data_dir, out)


def run_variants(
    estimator: str, variants: dict[str, dict[str, Any]], name: str, quick: bool, data_dir, out
) -> dict[str, Any]:
    """Every variant of ``estimator`` (one of ``variants``, with a ``default`` entry) on every
    classification table; finished folds kept in ``OUT/<name>-cells.jsonl``."""
    tables = (
        QUICK_TABLES if quick else tuple(t for t, (task, _) in T.TABLES.items() if task == "classification")
    )
    seeds = T.SEEDS[:1] if quick else T.SEEDS
    names = tuple(variants)
    cells_path = Path(out or ".") / (f"{name}-cells-quick.jsonl" if quick else f"{name}-cells.jsonl")
    sizes = {t: T.load_table(t, data_dir, MAX_ROWS)[0].shape[0] for t in tables}
    wanted = [(t, v, s, f) for t in tables for v in names for s in seeds for f in range(T.FOLDS)]
    worker = partial(run_fold, data_dir=data_dir, estimator=estimator, variants=variants)
    done = T.run_cells(
        wanted, cells_path, partial(_fingerprint, estimator=estimator, variants=variants), worker, sizes
    )
    rows = []
    for table in tables:
        X, y, n_full = T.load_table(table, data_dir, MAX_ROWS)
        for variant in names:
            folds = [done[table, variant, s, f] for s in seeds for f in range(T.FOLDS)]
            per_seed = [np.mean([r["score"] for r in folds if r["seed"] == s]) for s in seeds]
            rows.append(
                {
                    "table": table,
                    "rows": int(X.shape[0]),
                    "rows_full": int(n_full),
                    "features": int(X.shape[1]),
                    "classes": int(len(np.unique(y))),
                    "variant": variant,
                    "score": round(float(np.mean(per_seed)), 4),
                    "score_std": round(float(np.std(per_seed)), 4),
                    "seed_scores": [round(float(v), 4) for v in per_seed],
                    "fit_seconds": round(float(np.mean([r.get("fit_seconds", np.nan) for r in folds])), 2),
                    "epochs": round(float(np.mean([r["n_iter"] or 0 for r in folds])), 1),
                    **(
                        {"errors": sorted({r["error"] for r in folds if "error" in r})}
                        if any("error" in r for r in folds)
                        else {}
                    ),
                }
            )
    return {"results": rows, "summary": summarise(rows, tables, names)}


def summarise(rows, tables, variants) -> dict[str, Any]:
    cell = {(r["table"], r["variant"]): r for r in rows}
    summary: dict[str, Any] = {"n_tables": len(tables), "max_rows": MAX_ROWS}
    ranks: dict[str, list[float]] = {v: [] for v in variants}
    for table in tables:
        for variant, rank in T.ranks_of({v: cell[table, v]["score"] for v in variants}).items():
            ranks[variant].append(float(rank))
        for variant in variants:
            summary[f"score.{table}.{variant}"] = cell[table, variant]["score"]
    for variant in variants:
        scores = np.array([cell[t, variant]["score"] for t in tables])
        base = np.array([cell[t, "default"]["score"] for t in tables])
        summary[f"mean_score.{variant}"] = round(float(np.mean(scores)), 4)
        summary[f"mean_gain.{variant}"] = round(float(np.mean(scores - base)), 4)
        summary[f"win_tie_loss.{variant}"] = T.win_tie_loss(
            [cell[t, variant] for t in tables], [cell[t, "default"] for t in tables]
        )
        summary[f"rank.{variant}"] = round(float(np.mean(ranks[variant])), 2)
        summary[f"fit_seconds.{variant}"] = round(
            float(np.mean([cell[t, variant]["fit_seconds"] for t in tables])), 2
        )
    return summary
