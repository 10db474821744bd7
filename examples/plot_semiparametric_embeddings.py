"""Embeddings of the three SemiparametricClassifier modes, and how much the model relies on its neighbours.

The paper's Figure 3C shows t-SNE and Isomap maps of each model's embedding space: the
nonparametric model, whose output *is* the neighbour vote, needs tight, well-separated class
clusters; the parametric one only needs a linearly separable space. ``transform`` returns the
learned embeddings, so a fitted estimator sits in front of ``TSNE`` like any scikit-learn
transformer. The last panel is Figure 3B: ``reliance_curve_``, the ratio of the gradient of the
output with respect to the neighbour estimate to that with respect to the embedding, after each
epoch. The paper reports that the reliance on the neighbours wanes as training goes on.

Runs in about a minute on a CPU, on scikit-learn's digits; writes ``semiparametric_embeddings.png``
(or the path in the environment variable ``SKSEMIPARAM_EXAMPLE_OUT``).
"""

import os
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.manifold import TSNE
from sklearn.model_selection import train_test_split

from sksemiparam import SemiparametricClassifier

warnings.filterwarnings("ignore", category=ConvergenceWarning)
out = os.environ.get("SKSEMIPARAM_EXAMPLE_OUT", "semiparametric_embeddings.png")

X, y = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)

modes = ("semiparametric", "parametric", "nonparametric")
fig, axes = plt.subplots(1, 4, figsize=(20, 4.8), constrained_layout=True)
reliance = None
for ax, mode in zip(axes, modes):
    clf = SemiparametricClassifier(mode, max_epochs=60, random_state=0).fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)
    # The learned embedding of each test image (32 numbers), mapped to 2-D.
    embedded = TSNE(perplexity=30, random_state=0).fit_transform(clf.transform(X_test))
    scatter = ax.scatter(embedded[:, 0], embedded[:, 1], c=y_test, cmap="tab10", s=8)
    ax.set_title(f"{mode}: test accuracy {accuracy:.3f}")
    ax.set_xticks([])
    ax.set_yticks([])
    print(f"{mode:<15} test accuracy {accuracy:.4f}")
    if mode == "semiparametric":
        reliance = clf.reliance_curve_
fig.colorbar(scatter, ax=axes[:3], label="digit", ticks=range(10))

axes[3].plot(range(1, len(reliance) + 1), reliance)
axes[3].set_xlabel("epoch")
axes[3].set_ylabel("||d out / d estimate|| / ||d out / d embedding||")
axes[3].set_title("semiparametric: reliance on the neighbour estimate")
print(f"reliance after epoch 1: {reliance[0]:.3f}, after epoch {len(reliance)}: {reliance[-1]:.3f}")
fig.suptitle("t-SNE of the learned test embeddings (Figure 3C) and the reliance curve (Figure 3B)")
fig.savefig(out, dpi=90)
print(f"wrote {out}")
