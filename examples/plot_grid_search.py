"""
Tuning an sksemiparam estimator with a Pipeline and GridSearchCV
================================================================

Every sksemiparam estimator is a scikit-learn estimator, so it drops into a
:class:`~sklearn.pipeline.Pipeline` behind a :class:`~sklearn.preprocessing.StandardScaler` and
its hyperparameters are tuned with :class:`~sklearn.model_selection.GridSearchCV` like any other.
Here the search runs over :class:`~sksemiparam.SemiparametricClassifier`'s ``mode`` and ``tau``
(the exponent of the neighbour weights ``w = d^-tau``) on scikit-learn's digits. ``tau`` means
nothing to the ``"parametric"`` mode, so the grid is a list of two grids and the parametric model
is fitted once per fold, not once per ``tau``. The scaler sits inside the pipeline, so each
cross-validation split scales with statistics of its own training folds only.
"""

import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sksemiparam import SemiparametricClassifier

# Quick mode (SKSEMIPARAM_QUICK=1, used by CI): fewer epochs, folds and values of tau.
QUICK = os.environ.get("SKSEMIPARAM_QUICK") == "1"
MAX_EPOCHS = 10 if QUICK else 30
N_SPLITS = 3 if QUICK else 5
TAUS = [1.0, 4.0] if QUICK else [1.0, 2.0, 4.0, 8.0]

# 30 epochs per fit keep the search short; the training loss has not fully settled by then.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

# %%
# The pipeline and the grid
# -------------------------
# Parameters of a pipeline step are addressed as ``<step>__<parameter>``. A list of dictionaries
# is searched one dictionary at a time.

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

pipe = Pipeline(
    [
        ("scale", StandardScaler()),
        ("clf", SemiparametricClassifier(max_epochs=MAX_EPOCHS, random_state=0)),
    ]
)
param_grid = [
    {"clf__mode": ["parametric"]},
    {"clf__mode": ["semiparametric", "nonparametric"], "clf__tau": TAUS},
]
search = GridSearchCV(pipe, param_grid, cv=StratifiedKFold(N_SPLITS, shuffle=True, random_state=0))

start = time.perf_counter()
search.fit(X_train, y_train)
print(
    f"searched {len(search.cv_results_['params'])} candidates x {N_SPLITS} folds "
    f"in {time.perf_counter() - start:.1f} s"
)

# %%
# The cross-validation results
# ----------------------------
# ``cv_results_`` holds, for every candidate, the mean and standard deviation of its validation
# accuracy over the folds and its mean fit time.

results = search.cv_results_
modes = np.array([p["clf__mode"] for p in results["params"]])
taus = np.array([p.get("clf__tau", np.nan) for p in results["params"]])
print(f"\n{'rank':>4}  {'mode':<15}{'tau':>5}{'CV accuracy':>18}{'fit time (s)':>14}")
for i in np.argsort(results["rank_test_score"], kind="stable"):
    tau = "-" if np.isnan(taus[i]) else f"{taus[i]:g}"
    print(
        f"{results['rank_test_score'][i]:>4}  {modes[i]:<15}{tau:>5}"
        f"{results['mean_test_score'][i]:>11.4f} ± {results['std_test_score'][i]:.4f}"
        f"{results['mean_fit_time'][i]:>14.2f}"
    )

# %%
# Plot: accuracy and cost against ``tau``
# ---------------------------------------
# Lines are the two modes that use ``tau``, with one standard deviation over the folds as error
# bars; the grey band is the parametric model, the same at every ``tau``. On digits most
# differences are smaller than the spread between folds: only a small ``tau`` visibly hurts the
# nonparametric model, whose output is the neighbour vote itself, so it needs the vote to
# concentrate on the nearest neighbours.

fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
parametric = np.flatnonzero(modes == "parametric")[0]
mean, std = results["mean_test_score"][parametric], results["std_test_score"][parametric]
ax_acc.axhspan(mean - std, mean + std, color="0.85", label=None)
ax_acc.axhline(mean, color="0.4", linestyle="--", label="parametric (no tau)")
ax_time.axhline(results["mean_fit_time"][parametric], color="0.4", linestyle="--", label="parametric")
for mode, color, shift in (("semiparametric", "tab:blue", 0.96), ("nonparametric", "tab:orange", 1.04)):
    rows = np.flatnonzero(modes == mode)
    rows = rows[np.argsort(taus[rows])]
    ax_acc.errorbar(
        taus[rows] * shift,  # side by side, so that the error bars do not hide each other
        results["mean_test_score"][rows],
        yerr=results["std_test_score"][rows],
        marker="o",
        capsize=3,
        color=color,
        label=mode,
    )
    ax_time.plot(taus[rows], results["mean_fit_time"][rows], marker="o", color=color, label=mode)
for ax in (ax_acc, ax_time):
    ax.set_xscale("log", base=2)
    ax.set_xticks(TAUS, [f"{t:g}" for t in TAUS])
    ax.set_xlabel("tau (exponent of the neighbour weights d^-tau)")
    ax.legend(loc="best")
ax_acc.set_ylabel(f"mean {N_SPLITS}-fold CV accuracy")
ax_acc.set_title("validation accuracy (± 1 std over folds)")
ax_time.set_ylabel("mean fit time per fold (s)")
ax_time.set_ylim(bottom=0)
ax_time.set_title("cost")
fig.suptitle("GridSearchCV over SemiparametricClassifier's mode and tau, digits")

# %%
# The chosen model on the held-out test set
# -----------------------------------------
# With ``refit=True`` (the default) the search refits the best candidate on all training rows;
# ``best_estimator_`` is that whole pipeline, scaler included. Its test accuracy is an honest
# estimate; ``best_score_`` is not quite, being the largest of several cross-validation scores whose
# differences are within their noise.

print(f"\nbest parameters: {search.best_params_}")
print(f"best mean CV accuracy: {search.best_score_:.4f}")
print(f"test accuracy of best_estimator_: {search.best_estimator_.score(X_test, y_test):.4f}")

plt.show()
