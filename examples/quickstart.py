"""
Quickstart: a network with a memory against the same network without one
=========================================================================

:class:`~sksemiparam.SemiparametricClassifier` feeds a differentiable nearest-neighbour class
estimate (weights ``w = d^-tau`` over stored training embeddings) into the classifier next to the
embedding; its ``"parametric"`` mode is the same network without that estimate. Both are ordinary
scikit-learn estimators, here inside a :class:`~sklearn.pipeline.Pipeline`, trained on
scikit-learn's bundled digits. The script prints the test accuracy and fit time of each model and
draws them side by side.

This is also the script that the README's set-up command runs (``python examples/quickstart.py``).
"""

import os
import time
import warnings

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from sksemiparam import SemiparametricClassifier

# Quick mode (SKSEMIPARAM_QUICK=1, used by CI) trains for fewer epochs.
QUICK = os.environ.get("SKSEMIPARAM_QUICK") == "1"
MAX_EPOCHS = 20 if QUICK else 100

# The training loss is still inching down when ``max_epochs`` runs out, but the test accuracy
# no longer moves: silence the warning that says so.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

# %%
# Fit both models
# ---------------
# 1,257 training and 540 test images of 8x8 pixels, scaled to [0, 1]. The semiparametric model
# stores the training images; at prediction each test image's embedding is compared with the
# embeddings of its nearest stored neighbours.

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)

print(f"digits: {len(X_train)} training and {len(X_test)} test images of 8x8 pixels\n")
print(f"{'model':<16}{'test accuracy':>15}{'fit time (s)':>14}")
modes = ("semiparametric", "parametric")
accuracies, seconds = {}, {}
for mode in modes:
    model = make_pipeline(
        MinMaxScaler(), SemiparametricClassifier(mode, max_epochs=MAX_EPOCHS, random_state=0)
    )
    start = time.perf_counter()
    model.fit(X_train, y_train)
    seconds[mode] = time.perf_counter() - start
    accuracies[mode] = model.score(X_test, y_test)
    print(f"{mode:<16}{accuracies[mode]:>15.4f}{seconds[mode]:>14.2f}")

# %%
# Accuracy and cost side by side
# ------------------------------
# On a problem this easy both networks are near the ceiling. The neighbour estimate costs the
# distances between all rows of every training mini-batch (the neighbours during training are the
# other rows of the batch), hence the longer fit.

fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(8, 2.6), constrained_layout=True)
colors = ["tab:blue", "tab:gray"]
for ax, values, label, fmt in (
    (ax_acc, accuracies, "test accuracy", "{:.3f}"),
    (ax_time, seconds, "fit time (s)", "{:.1f} s"),
):
    bars = ax.barh(modes, [values[m] for m in modes], color=colors)
    ax.bar_label(bars, labels=[fmt.format(values[m]) for m in modes], padding=3)
    ax.set_xlabel(label)
    ax.invert_yaxis()
    ax.spines[["top", "right"]].set_visible(False)
ax_acc.set_xlim(0, 1.15)
ax_acc.set_xticks([0, 0.25, 0.5, 0.75, 1])
ax_time.set_xlim(0, 1.25 * max(seconds.values()))
ax_time.set_yticklabels([])
fig.suptitle("SemiparametricClassifier on digits: with and without the neighbour estimate")

# Open a window only where there is a screen: on a headless machine (the README's set-up
# command, CI) matplotlib falls back to the non-interactive Agg backend, which cannot show.
if plt.get_backend().lower() != "agg":
    plt.show()
