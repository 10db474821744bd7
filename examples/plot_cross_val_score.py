"""
Cross-validated comparison with MLPClassifier and KNeighborsClassifier
======================================================================

The sksemiparam estimators combine a neural network with nearest-neighbour retrieval, so the two
natural baselines are scikit-learn's :class:`~sklearn.neural_network.MLPClassifier` (the network
alone) and :class:`~sklearn.neighbors.KNeighborsClassifier` (the neighbours alone, on the raw
features). :func:`~sklearn.model_selection.cross_val_score` scores all of them on the same five
folds of scikit-learn's digits, each inside the same ``StandardScaler`` pipeline. The figure shows
every fold's score, so you can judge whether the differences between models are larger than the
differences between folds, and what each model costs.
"""

import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksemiparam import MbPAClassifier, NNGKClassifier, SemiparametricClassifier

# Quick mode (SKSEMIPARAM_QUICK=1, used by CI): fewer epochs and three folds.
QUICK = os.environ.get("SKSEMIPARAM_QUICK") == "1"
EPOCHS = 10 if QUICK else 50
N_SPLITS = 3 if QUICK else 5

# The epoch budgets below are deliberately short; the training loss is still going down.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

# %%
# The models
# ----------
# The sksemiparam estimators use their default networks: SemiparametricClassifier and
# MbPAClassifier a 64-32-32 MLP embedding with a linear output layer, NNGKClassifier a 64-128-64
# embedding and a Gaussian-kernel vote over its 32 nearest stored training embeddings.
# MLPClassifier keeps its default single hidden layer of 100 units, KNeighborsClassifier its
# default 5 neighbours. NNGK re-embeds every training example after each epoch, so it gets fewer
# epochs.

X, y = load_digits(return_X_y=True)
models = {
    "SemiparametricClassifier": SemiparametricClassifier(max_epochs=EPOCHS, random_state=0),
    "MbPAClassifier": MbPAClassifier(max_epochs=EPOCHS, random_state=0),
    "NNGKClassifier": NNGKClassifier(max_epochs=EPOCHS // 5 * 2, random_state=0),
    "MLPClassifier": MLPClassifier(max_iter=6 * EPOCHS, random_state=0),
    "KNeighborsClassifier": KNeighborsClassifier(),
}

# %%
# Cross-validation on the same folds
# ----------------------------------
# A fixed, shuffled ``StratifiedKFold`` gives every model the same training and validation rows,
# so fold ``k``'s scores are directly comparable across models.

cv = StratifiedKFold(N_SPLITS, shuffle=True, random_state=0)
scores, seconds = {}, {}
print(f"digits, {N_SPLITS}-fold cross-validation (accuracy; time of the whole cross_val_score call)\n")
for name, model in models.items():
    start = time.perf_counter()
    scores[name] = cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=cv)
    seconds[name] = time.perf_counter() - start
    print(f"{name:<26}{scores[name].mean():.4f} ± {scores[name].std():.4f}{seconds[name]:>9.1f} s")

# %%
# Fold scores and cost
# --------------------
# Left: a box per model over its fold scores, with the scores themselves as dots; a grey line links
# the scores of the same fold across models. Right: the time of the whole cross-validation (log
# scale). On a data set as small and clean as digits, all five models land within about a point of
# each other, no more than the spread between folds: the memory-based networks match the two
# baselines here but do not beat them, at the cost of training a network. What they add is
# elsewhere: a memory that ``partial_fit`` extends as new data arrive (see the continual-learning
# example) and, for NNGK, ``explain``, which names the stored examples behind a prediction.

names = list(models)
labels = [n.removesuffix("Classifier") for n in names]
fig, (ax_score, ax_time) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[3, 2], constrained_layout=True)
positions = np.arange(len(names))
ax_score.boxplot(
    [scores[n] for n in names],
    positions=positions,
    widths=0.5,
    showfliers=False,
    medianprops={"color": "black"},
)
fold_scores = np.array([scores[n] for n in names])  # (n_models, n_splits)
for k in range(N_SPLITS):
    ax_score.plot(positions, fold_scores[:, k], color="0.8", linewidth=0.8, zorder=1)
    ax_score.scatter(positions, fold_scores[:, k], s=22, zorder=3, label=f"fold {k}")
ax_score.set_xticks(positions, labels)
ax_score.set_ylabel("validation accuracy")
ax_score.legend(loc="lower left", fontsize=8, ncols=N_SPLITS, handletextpad=0.1, columnspacing=0.8)
ax_score.set_title(f"{N_SPLITS}-fold cross-validation on digits")
ax_score.set_ylim(fold_scores.min() - 0.02, min(1.0, fold_scores.max() + 0.01))

colors = ["tab:blue"] * 3 + ["tab:gray"] * 2  # sksemiparam, then scikit-learn
bars = ax_time.bar(positions, [seconds[n] for n in names], color=colors, width=0.6)
ax_time.bar_label(bars, labels=[f"{seconds[n]:.1f} s" for n in names], padding=2, fontsize=9)
ax_time.set_yscale("log")
ax_time.set_ylim(top=5 * max(seconds.values()))
ax_time.set_xticks(positions, labels, rotation=30, ha="right")
ax_time.set_ylabel("seconds (log scale)")
ax_time.set_title("time of the whole cross_val_score call")

plt.show()
