"""What each estimator costs over its own plain network: fit, predict, accuracy, awkward and small tables.

Everything runs in one process with one torch thread and one BLAS thread (``THREADS``: on this shared
2-core machine two threads made a plain training step up to 30x slower under other jobs' load, which
would measure the load, not the library), after an untimed warm-up fit of every class. Four parts:

1. **Each estimator beside its twin** (``fit_ratio``, ``predict_ratio``; ``accuracy``, or ``mse`` for the
   regressor, ``fit_seconds`` and ``predict_seconds``, each with ``.baseline``: the twin's). Full MNIST
   (60,000 training images, the 10,000 test images as the timed queries) for the five classifiers; the UCI
   ``elevators`` set (split 0, 14,940 training rows, features standardised on them) for
   MetaNeighborhoodsRegressor, whose 1,659 test rows are tiled to 10,000 timed queries (its MSE, on the
   standardised target scale, is that of the test rows). Every model trains ``EPOCHS`` epochs (a fixed
   budget: ``n_iter_no_change`` is out of reach), batch 100 on MNIST and 128 (the estimator's default)
   on elevators, the MNIST embedding MLP 784-256-64 everywhere on MNIST; every other parameter is the
   estimator's default (``index="auto"`` is exact search at these sizes). The twin is the same embedding
   with the same epochs and batches and no neighbours:

   - SemiparametricClassifier, MbPAClassifier, NNGKClassifier, ImpostorClassifier: the softmax network,
     ``SemiparametricClassifier("parametric", head_layer_sizes=())`` (the embedding, then one linear
     layer and a softmax), as in ``nngk-speed``. It is MbPA's own network g(f(x)) without the memory
     writes and the adaptation, and the parametric mode of SemiparametricClassifier;
   - MetaNeighborhoodsClassifier: the same estimator with ``n_inner_steps=0, aux_weight=0`` (the
     vanilla cosine classifier of ``meta-neighborhoods-classification``);
   - MetaNeighborhoodsRegressor: the same estimator with ``n_inner_steps=0`` (the vanilla network of
     ``meta-neighborhoods-regression``).

   ``VARIANTS`` run beside them as estimators of their own, with the softmax twin: NNGK and the Impostor
   Network with the paper's procedure (``candidates=None``: every step searches the stored centres),
   and against fewer drawn candidates than their defaults (which draw stored rows per step and search
   nothing while training), so the procedures are compared on the same seeds.

   Fit seconds run up to a model ready to predict: SemiparametricClassifier's index over its stored
   examples, which it builds on first use, is built inside the timing (as in ``semiparametric-speed``).
   Predict seconds are one ``predict`` of the queries. The twin is fitted right before its estimator,
   for every estimator and seed, so both see the same load. Ratios are estimator over twin, per seed,
   then averaged over ``SEEDS`` seeds (``_std``: their spread); ``seed_seconds`` is each seed's wall
   time for this part.
2. **Awkward tables** (``heavy_tail_ratio``, ``duplicates_ratio``), for the estimators that search a
   memory (MetaNeighborhoods attends over all its dictionary entries by default and searches
   nothing). A classification table of 4,000 rows x 8 features (4 classes, standardised) is
   well-behaved; the heavy-tailed table is the same with 0.5% of its rows (20) multiplied by 200; the
   duplicates table draws its 4,000 rows with repetition from 300 distinct rows of it. The ratio is the
   fit seconds on each over the fit on the well-behaved table (defaults, ``SLOW_EPOCHS`` epochs), per seed.
3. **Small tables** (``small_table_ratio``, ``small_table_seconds``, ``small_table_n_iter``,
   ``small_table_score``): on a generated table of 3,000 training rows x 6 features
   (``make_classification``, 3 classes; ``make_friedman1`` for the regressor), standardised, the
   default fit of each estimator (only ``device="cpu"`` and ``random_state`` given) over the default
   fit of ``sklearn.neural_network.MLPClassifier`` (or ``MLPRegressor``), with the epochs each ran
   (``n_iter_``) and the test score (accuracy or R^2 on 1,000 more rows). One fit each, seed 0.
4. **The training loop** (``step_ratio``, ``step_ms``, ``plain_step_ms``): on the same small table,
   a fit of ``STEP_EPOCHS`` epochs through the library over a hand-written torch loop that trains
   the same network (a copy of the fitted ``module_``) with ``torch.optim.Adam`` (its fused kernel,
   as the library's) at the same learning rate (the library's AdamW with its default weight decay 0
   takes the same steps), the same batch size and epochs, reshuffled every epoch, and the
   estimator's training loss. Both are timed from the numpy arrays to the trained network (fastest
   of 3 when under 2 s). Measured for the parametric twin (``parametric_twin``: the library's
   overhead alone; the target is 1.3x), SemiparametricClassifier (its in-batch neighbour estimate is
   part of the network's forward pass, so the plain loop does it too), both Meta-Neighborhoods
   (their inner steps are in the forward pass too) and MbPAClassifier, whose plain loop trains
   g(f(x)) without writing the memory: its ratio includes the memory writes and the index built at
   the end. NNGK and the Impostor Network search an index inside their loss; a plain loop would have
   to re-implement them, so they have no step ratio.

``--quick``: 10,000 MNIST training images and 2,000 queries, 5,000 elevators rows, one seed; awkward
tables of 2,000 rows, 2 epochs; small tables of 1,000 training rows; 3 loop epochs.
"""

from __future__ import annotations

import copy
import functools
import time
import warnings
from typing import Any

import numpy as np
import torch

from ._common import timed
from ._images import EMBEDDINGS, load_images

EPOCHS = 1  # ~4-5 minutes a seed (the paper's searches, NNGK ~17x and the Impostor Network ~22x the twin)
SEEDS = 3
N_QUERIES = 10_000
REGRESSION_DATASET = "elevators"
SLOW_ROWS, SLOW_FEATURES, SLOW_CLASSES, SLOW_EPOCHS = 4000, 8, 4, 5
HEAVY_FRACTION, HEAVY_SCALE, N_DISTINCT = 0.005, 200.0, 300
SMALL_TRAIN, SMALL_TEST, SMALL_FEATURES = 3000, 1000, 6
STEP_EPOCHS = 10
THREADS = 1
QUICK = {
    "n_train": 10_000,
    "n_queries": 2000,
    "regression_rows": 5000,
    "seeds": 1,
    "slow_rows": 2000,
    "slow_epochs": 2,
    "small_train": 1000,
    "small_test": 500,
    "step_epochs": 3,
}
FULL = {
    "n_train": None,
    "n_queries": N_QUERIES,
    "regression_rows": None,
    "seeds": SEEDS,
    "slow_rows": SLOW_ROWS,
    "slow_epochs": SLOW_EPOCHS,
    "small_train": SMALL_TRAIN,
    "small_test": SMALL_TEST,
    "step_epochs": STEP_EPOCHS,
}
CLASSIFIERS = (
    "SemiparametricClassifier",
    "MbPAClassifier",
    "NNGKClassifier",
    "ImpostorClassifier",
    "MetaNeighborhoodsClassifier",
)
# Training modes beside the defaults (same twin, same parts): NNGK and the Impostor Network with the
# paper's procedure (candidates=None: each step searches every stored centre), and against fewer
# stored rows drawn per step than the defaults (NNGK 128, the Impostor Network 1024; ModernNCA's
# stochastic neighbour sampling). name -> (class, parameters).
VARIANTS = {
    "NNGKClassifier(candidates=None)": ("NNGKClassifier", {"candidates": None}),
    "NNGKClassifier(candidates=64)": ("NNGKClassifier", {"candidates": 64}),
    "ImpostorClassifier(candidates=None)": ("ImpostorClassifier", {"candidates": None}),
    "ImpostorClassifier(candidates=256)": ("ImpostorClassifier", {"candidates": 256}),
}
CLASSIFIERS += tuple(VARIANTS)
RETRIEVAL = ("SemiparametricClassifier", "MbPAClassifier", "NNGKClassifier", "ImpostorClassifier", *VARIANTS)
REGRESSOR = "MetaNeighborhoodsRegressor"
SOFTMAX_TWIN = 'SemiparametricClassifier("parametric", head_layer_sizes=())'
TWINS = {
    "SemiparametricClassifier": SOFTMAX_TWIN,
    "MbPAClassifier": SOFTMAX_TWIN,
    "NNGKClassifier": SOFTMAX_TWIN,
    "ImpostorClassifier": SOFTMAX_TWIN,
    **{name: SOFTMAX_TWIN for name in VARIANTS},
    "MetaNeighborhoodsClassifier": "MetaNeighborhoodsClassifier(n_inner_steps=0, aux_weight=0)",
    REGRESSOR: "MetaNeighborhoodsRegressor(n_inner_steps=0)",
}


def _estimator(name: str, **params):
    import sksemiparam

    name, extra = VARIANTS.get(name, (name, {}))
    return getattr(sksemiparam, name)(**extra, **params)


def _twin(name: str, **params):
    """The estimator's plain network (see the module docstring), with the same training parameters."""
    if name == "MetaNeighborhoodsClassifier":
        return _estimator(name, n_inner_steps=0, aux_weight=0.0, **params)
    if name == REGRESSOR:
        return _estimator(name, n_inner_steps=0, **params)
    return _estimator("SemiparametricClassifier", mode="parametric", head_layer_sizes=(), **params)


# ----------------------------------------------------------------------------- part 1: twins
def _fit_predict(model, X, y, X_query) -> tuple[float, float, np.ndarray]:
    """Fit seconds (up to a model ready to predict), predict seconds, predictions."""
    start = time.perf_counter()
    model.fit(X, y)
    if getattr(model, "mode", None) == "semiparametric":
        model.index_  # noqa: B018 (SemiparametricClassifier indexes its stored examples on first use)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pred = model.predict(X_query)
    return fit_seconds, time.perf_counter() - start, pred


def _mnist(data_dir: str | None, setting: dict[str, Any]):
    X_train, y_train, X_test, y_test = load_images("mnist", data_dir)
    n = setting["n_train"] or X_train.shape[0]
    q = setting["n_queries"]
    return X_train[:n], y_train[:n], X_test[:q], y_test[:q]


def _regression(data_dir: str | None, setting: dict[str, Any]):
    """elevators split 0, standardised on its training rows; the test rows tiled to the query count."""
    from sklearn.preprocessing import StandardScaler

    from sksemiparam.datasets import load_uci

    X_train, X_test, y_train, y_test = load_uci(REGRESSION_DATASET, data_dir, split=0)
    n = setting["regression_rows"] or X_train.shape[0]
    X_train, y_train = X_train[:n], y_train[:n]
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = (scaler.transform(a).astype(np.float32) for a in (X_train, X_test))
    queries = np.resize(X_test, (setting["n_queries"], X_test.shape[1]))  # the test rows first
    return X_train, y_train, queries, y_test


def _pair_rows(name, seed, data, train, dataset) -> list[dict[str, Any]]:
    """Fit and predict the twin, then the estimator; one result row each."""
    X, y, X_query, y_test = data
    rows = []
    for role, model in (("twin", _twin(name, **train)), ("estimator", _estimator(name, **train))):
        fit_s, predict_s, pred = _fit_predict(model, X, y, X_query)
        row = {
            "part": "twins",
            "dataset": dataset,
            "estimator": name,
            "model": role,
            "twin": TWINS[name],
            "seed": seed,
            "n_train": int(X.shape[0]),
            "n_queries": int(X_query.shape[0]),
            "epochs": int(model.n_iter_),
            "fit_seconds": round(fit_s, 3),
            "predict_seconds": round(predict_s, 3),
        }
        if name == REGRESSOR:  # MSE of the test rows, on the standardised target scale
            row["mse"] = round(float(np.mean(((pred[: len(y_test)] - y_test) / y.std()) ** 2)), 5)
        else:
            row["accuracy"] = round(float(np.mean(pred == y_test)), 4)
        rows.append(row)
        score = row.get("accuracy", row.get("mse"))
        print(
            f"  seed {seed} {name:<28} {role:<9} fit {fit_s:7.1f} s  predict {predict_s:6.2f} s  "
            f"{'accuracy' if 'accuracy' in row else 'MSE'} {score:.4f}",
            flush=True,
        )
    return rows


def _twins(data_dir: str | None, setting: dict[str, Any]) -> tuple[list[dict[str, Any]], list[float]]:
    mnist, regression = _mnist(data_dir, setting), _regression(data_dir, setting)
    rows, seed_seconds = [], []
    for seed in range(setting["seeds"]):
        start = time.perf_counter()
        common = {"max_epochs": EPOCHS, "n_iter_no_change": 10**6, "device": "cpu", "random_state": seed}
        for name in CLASSIFIERS:
            rows += _pair_rows(
                name, seed, mnist, {**EMBEDDINGS["mnist"], "batch_size": 100, **common}, "mnist"
            )
        rows += _pair_rows(REGRESSOR, seed, regression, {"batch_size": 128, **common}, REGRESSION_DATASET)
        seed_seconds.append(round(time.perf_counter() - start, 1))
    return rows, seed_seconds


# ----------------------------------------------------------------------- part 2: awkward tables
def _awkward_tables(n_rows: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Well-behaved, heavy-tailed and duplicated tables of the same shape (see the module docstring)."""
    from sklearn.datasets import make_classification
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(
        n_rows, SLOW_FEATURES, n_informative=6, n_classes=SLOW_CLASSES, random_state=seed
    )
    X = StandardScaler().fit_transform(X).astype(np.float32)
    rng = np.random.default_rng(seed)
    heavy = X.copy()
    heavy[rng.choice(n_rows, max(1, round(HEAVY_FRACTION * n_rows)), replace=False)] *= HEAVY_SCALE
    distinct = rng.choice(n_rows, N_DISTINCT, replace=False)
    drawn = distinct[rng.integers(0, N_DISTINCT, n_rows)]
    return {"well_behaved": (X, y), "heavy_tail": (heavy, y), "duplicates": (X[drawn], y[drawn])}


def _awkward(setting: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for seed in range(setting["seeds"]):
        tables = _awkward_tables(setting["slow_rows"], seed)
        for name in RETRIEVAL:
            for table, (X, y) in tables.items():
                model = _estimator(
                    name, max_epochs=setting["slow_epochs"], n_iter_no_change=10**6, device="cpu",
                    random_state=seed,
                )  # fmt: skip
                start = time.perf_counter()
                model.fit(X, y)
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "part": "awkward_tables",
                        "estimator": name,
                        "table": table,
                        "seed": seed,
                        "n_rows": int(X.shape[0]),
                        "n_distinct_rows": int(len(np.unique(X, axis=0))),
                        "epochs": int(model.n_iter_),
                        "fit_seconds": round(seconds, 3),
                    }
                )
                print(f"  seed {seed} {name:<28} {table:<13} fit {seconds:6.2f} s", flush=True)
    return rows


# -------------------------------------------------------------------------- part 3: small tables
def _small_tables(n_train: int, n_test: int) -> dict[str, tuple[np.ndarray, ...]]:
    """(X_train, X_test, y_train, y_test) of the classification and the regression table."""
    from sklearn.datasets import make_classification, make_friedman1
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    n = n_train + n_test
    Xc, yc = make_classification(
        n, SMALL_FEATURES, n_informative=4, n_redundant=1, n_classes=3, random_state=0
    )
    Xr, yr = make_friedman1(n, n_features=SMALL_FEATURES, noise=1.0, random_state=0)
    tables = {}
    for task, (X, y) in {"classification": (Xc, yc), "regression": (Xr, yr.astype(np.float32))}.items():
        stratify = y if task == "classification" else None
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, train_size=n_train, test_size=n_test, stratify=stratify, random_state=0
        )
        scaler = StandardScaler().fit(X_train)
        tables[task] = (
            scaler.transform(X_train).astype(np.float32),
            scaler.transform(X_test).astype(np.float32),
            y_train,
            y_test,
        )
    return tables


def _small(tables) -> list[dict[str, Any]]:
    """The default fit of every estimator and of scikit-learn's MLP on the small tables."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    models = [("MLPClassifier", MLPClassifier(random_state=0))]
    models += [(name, _estimator(name, device="cpu", random_state=0)) for name in CLASSIFIERS]
    models += [("MLPRegressor", MLPRegressor(random_state=0))]
    models += [(REGRESSOR, _estimator(REGRESSOR, device="cpu", random_state=0))]
    rows = []
    for name, model in models:
        task = "regression" if "Regressor" in name else "classification"
        X_train, X_test, y_train, y_test = tables[task]
        start = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        score = float(model.score(X_test, y_test))
        rows.append(
            {
                "part": "small_table",
                "estimator": name,
                "task": task,
                "n_train": int(X_train.shape[0]),
                "fit_seconds": round(seconds, 3),
                "n_iter": int(model.n_iter_),
                "test_score": round(score, 4),
            }
        )
        print(f"  {name:<28} default fit {seconds:6.1f} s, {model.n_iter_:3d} epochs, score {score:.4f}")
    return rows


# --------------------------------------------------------------------------- part 4: the loop
def _nll_xy(module, X, y):  # SemiparametricNet: the forward pass takes the labels (in-batch estimate)
    return torch.nn.functional.nll_loss(module(X, y), y)


def _nll(module, X, y):  # MbPANet: log-probabilities of g(f(x))
    return torch.nn.functional.nll_loss(module(X), y)


def _mn_classification(module, X, y, aux_weight=1.0):  # MetaNeighborhoodsNet with its auxiliary head
    z = module.embedding(X)
    loss = torch.nn.functional.cross_entropy(module.outputs(z), y)
    if module.auxiliary is not None:
        loss = loss + aux_weight * torch.nn.functional.cross_entropy(module.auxiliary(z), y)
    return loss


def _mse(module, X, y):  # MetaNeighborhoodsNet: outputs on the standardised target
    return torch.nn.functional.mse_loss(module(X), y)


LOOPS = {  # name: (estimator, its parameters, the loss of the plain loop)
    "parametric_twin": ("SemiparametricClassifier", {"mode": "parametric"}, _nll_xy),
    "SemiparametricClassifier": ("SemiparametricClassifier", {}, _nll_xy),
    "MbPAClassifier": ("MbPAClassifier", {}, _nll),
    "MetaNeighborhoodsClassifier": ("MetaNeighborhoodsClassifier", {}, _mn_classification),
    REGRESSOR: (REGRESSOR, {}, _mse),
}


def _plain_loop(template, loss, X, y, *, epochs, batch_size, learning_rate, regression):
    """Train a copy of ``template`` the plain way: Adam, shuffled mini-batches, ``loss``."""
    X_t = torch.from_numpy(X)
    if regression:  # the estimator standardises the target; so does the plain loop
        y_t = torch.from_numpy(((y - y.mean()) / y.std()).astype(np.float32)).reshape(-1, 1)
    else:
        y_t = torch.from_numpy(y).long()
    module = copy.deepcopy(template).train()
    try:  # the fused kernel, as a careful hand-written loop would use (the library does)
        optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate, fused=True)
    except (RuntimeError, ValueError):
        optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(0)
    n = X_t.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            ids = order[start : start + batch_size]
            value = loss(module, X_t[ids], y_t[ids])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
    return module


def _loops(tables, epochs: int) -> list[dict[str, Any]]:
    rows = []
    for key, (name, params, loss) in LOOPS.items():
        regression = name == REGRESSOR
        X, _, y, _ = tables["regression" if regression else "classification"]
        model = _estimator(
            name, **params, max_epochs=epochs, n_iter_no_change=10**6, device="cpu", random_state=0
        )
        library_s, _ = timed(functools.partial(model.fit, X, y), repeat_below=2.0)
        plain = functools.partial(
            _plain_loop, model.module_, loss, X, y, epochs=epochs, batch_size=model.batch_size,
            learning_rate=model.learning_rate, regression=regression,
        )  # fmt: skip
        plain_s, _ = timed(plain, repeat_below=2.0)
        steps = epochs * -(-X.shape[0] // model.batch_size)
        rows.append(
            {
                "part": "training_loop",
                "estimator": key,
                "epochs": epochs,
                "steps": steps,
                "library_seconds": round(library_s, 3),
                "plain_seconds": round(plain_s, 3),
                "step_ms": round(1000 * library_s / steps, 3),
                "plain_step_ms": round(1000 * plain_s / steps, 3),
            }
        )
        print(
            f"  {key:<28} {steps} steps: library {library_s:6.2f} s, plain torch {plain_s:6.2f} s "
            f"({library_s / plain_s:.2f}x)",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------- run
def _warm_up() -> None:
    """One small fit of every class, untimed: the first fit of a process pays torch's set-up."""
    from sklearn.datasets import make_classification, make_regression
    from sklearn.neural_network import MLPClassifier

    X, y = make_classification(300, 8, random_state=0)
    Xr, yr = make_regression(300, 8, random_state=0)
    for name in CLASSIFIERS:
        _estimator(name, max_epochs=1, device="cpu", random_state=0).fit(X.astype(np.float32), y)
    _estimator("SemiparametricClassifier", mode="parametric", max_epochs=1, device="cpu").fit(X, y)
    _estimator(REGRESSOR, max_epochs=1, device="cpu", random_state=0).fit(Xr, yr)
    MLPClassifier(max_iter=5, random_state=0).fit(X, y)


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """All four parts; each result row says its ``part``."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    setting = QUICK if quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with threadpool_limits(THREADS), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _warm_up()
            seconds, rows = {}, []
            start = time.perf_counter()
            print("part 1: each estimator beside its twin", flush=True)
            twin_rows, seed_seconds = _twins(data_dir, setting)
            seconds["twins"] = time.perf_counter() - start
            print("part 2: heavy-tailed and duplicated rows", flush=True)
            rows = twin_rows + _awkward(setting)
            seconds["awkward_tables"] = time.perf_counter() - start - sum(seconds.values())
            tables = _small_tables(setting["small_train"], setting["small_test"])
            print("part 3: default fits on a small table", flush=True)
            rows += _small(tables)
            seconds["small_table"] = time.perf_counter() - start - sum(seconds.values())
            print("part 4: the training loop against a plain torch loop", flush=True)
            rows += _loops(tables, setting["step_epochs"])
            seconds["training_loop"] = time.perf_counter() - start - sum(seconds.values())
    finally:
        torch.set_num_threads(threads)
    summary = _summary(rows, setting)
    summary["seed_seconds"] = seed_seconds
    summary["part_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return {"results": rows, "summary": summary}


# --------------------------------------------------------------------------------- summary
def _mean_std(summary: dict[str, Any], key: str, values, digits: int = 4) -> None:
    values = np.asarray(values, dtype=float)
    summary[key] = round(float(values.mean()), digits)
    if len(values) > 1:
        summary[f"{key}_std"] = round(float(values.std()), digits)


def _twin_summary(rows, summary) -> None:
    for name in (*CLASSIFIERS, REGRESSOR):
        mine = [r for r in rows if r["part"] == "twins" and r["estimator"] == name]
        est = sorted((r for r in mine if r["model"] == "estimator"), key=lambda r: r["seed"])
        twin = sorted((r for r in mine if r["model"] == "twin"), key=lambda r: r["seed"])
        for what in ("fit", "predict"):
            ratios = [e[f"{what}_seconds"] / t[f"{what}_seconds"] for e, t in zip(est, twin)]
            _mean_std(summary, f"{what}_ratio.{name}", ratios, 2)
        for what in ("fit", "predict"):
            _mean_std(summary, f"{what}_seconds.{name}", [r[f"{what}_seconds"] for r in est], 2)
            _mean_std(summary, f"{what}_seconds.{name}.baseline", [r[f"{what}_seconds"] for r in twin], 2)
        metric = "mse" if name == REGRESSOR else "accuracy"
        _mean_std(summary, f"{metric}.{name}", [r[metric] for r in est])
        _mean_std(summary, f"{metric}.{name}.baseline", [r[metric] for r in twin])


def _awkward_summary(rows, summary) -> None:
    for name in RETRIEVAL:
        mine = [r for r in rows if r["part"] == "awkward_tables" and r["estimator"] == name]
        seeds = sorted({r["seed"] for r in mine})
        seconds = {(r["table"], r["seed"]): r["fit_seconds"] for r in mine}
        for table in ("heavy_tail", "duplicates"):
            ratios = [seconds[table, s] / seconds["well_behaved", s] for s in seeds]
            _mean_std(summary, f"{table}_ratio.{name}", ratios, 2)


def _small_summary(rows, summary) -> None:
    small = {r["estimator"]: r for r in rows if r["part"] == "small_table"}
    for name, row in small.items():
        if not name.startswith("MLP"):
            baseline = small["MLPRegressor" if name == REGRESSOR else "MLPClassifier"]
            summary[f"small_table_ratio.{name}"] = round(row["fit_seconds"] / baseline["fit_seconds"], 2)
    for name, row in small.items():
        summary[f"small_table_seconds.{name}"] = row["fit_seconds"]
    for name, row in small.items():
        summary[f"small_table_n_iter.{name}"] = row["n_iter"]
    for name, row in small.items():
        summary[f"small_table_score.{name}"] = row["test_score"]
    for r in rows:
        if r["part"] == "training_loop":
            summary[f"step_ratio.{r['estimator']}"] = round(r["library_seconds"] / r["plain_seconds"], 2)
    for key in ("step_ms", "plain_step_ms"):
        for r in rows:
            if r["part"] == "training_loop":
                summary[f"{key}.{r['estimator']}"] = r[key]


def _summary(rows: list[dict[str, Any]], setting: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "epochs": EPOCHS,
        "seeds": setting["seeds"],
        "n_train_mnist": next(r["n_train"] for r in rows if r.get("dataset") == "mnist"),
        "n_queries": setting["n_queries"],
        "regression_dataset": REGRESSION_DATASET,
        "threads": THREADS,
        "awkward_rows": setting["slow_rows"],
        "awkward_epochs": setting["slow_epochs"],
        "small_table_train_rows": setting["small_train"],
        "loop_epochs": setting["step_epochs"],
        "step_ratio_target": 1.3,
    }
    _twin_summary(rows, summary)
    _awkward_summary(rows, summary)
    _small_summary(rows, summary)
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """Bars: fit and predict ratio over the twin; awkward-table and small-table ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["summary"]
    short = {
        n: n.replace("Classifier", "").replace("Regressor", " (reg.)").replace("candidates=", "m=")
        for n in (*CLASSIFIERS, REGRESSOR)
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), constrained_layout=True)
    names = [*CLASSIFIERS, REGRESSOR]
    x = np.arange(len(names))
    for offset, what in ((-0.2, "fit"), (0.2, "predict")):
        values = [s[f"{what}_ratio.{n}"] for n in names]
        errors = [s.get(f"{what}_ratio.{n}_std", 0.0) for n in names]
        left.bar(x + offset, values, 0.4, yerr=errors, label=f"{what} time / twin's")
    left.axhline(1.0, color="k", lw=0.8)
    left.set_xticks(x, [short[n] for n in names], rotation=20)
    left.set_yscale("log")
    left.set_ylabel("estimator / plain network")
    left.set_title(f"MNIST (elevators for the regressor), {s['epochs']} epoch(s), {s['seeds']} seed(s)")
    left.legend()
    bars = (
        ("heavy_tail_ratio", "heavy-tailed / well-behaved rows"),
        ("duplicates_ratio", "300 distinct / distinct rows"),
        ("small_table_ratio", "default fit / sklearn MLP's"),
    )
    for k, (key, label) in enumerate(bars):
        right.bar(x + (k - 1) * 0.27, [s.get(f"{key}.{n}", np.nan) for n in names], 0.27, label=label)
    right.axhline(1.0, color="k", lw=0.8)
    right.set_xticks(x, [short[n] for n in names], rotation=20)
    right.set_yscale("log")
    right.set_ylabel("fit time ratio")
    right.set_title("awkward tables (4 retrieval estimators) and a small table")
    right.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
