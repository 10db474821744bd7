"""Quickstart: SemiparametricClassifier against its parametric baseline on scikit-learn's digits.

The semiparametric model feeds a differentiable nearest-neighbour class estimate (w = d^-tau over
stored training embeddings) into the classifier next to the embedding; the parametric baseline is
the same network without it. Both are ordinary scikit-learn estimators, here inside a Pipeline.
"""

import time
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from sksemiparam import SemiparametricClassifier

# 100 epochs (the default) are plenty here although the training loss is still inching down.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)

print(f"digits: {len(X_train)} training and {len(X_test)} test images of 8x8 pixels\n")
print(f"{'model':<16}{'test accuracy':>15}{'fit time (s)':>14}")
for mode in ("semiparametric", "parametric"):
    model = make_pipeline(MinMaxScaler(), SemiparametricClassifier(mode, random_state=0))
    start = time.perf_counter()
    model.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    print(f"{mode:<16}{model.score(X_test, y_test):>15.4f}{seconds:>14.2f}")
