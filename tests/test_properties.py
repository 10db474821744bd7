"""Hypothesis properties that hold for every public estimator, whatever finite data it gets.

For any finite float input of 2..60 rows and 1..8 features (|x| <= 1e6), with at least two classes
for classifiers and any finite target for regressors: fit/predict/predict_proba succeed, the
probabilities are a distribution, predictions are known classes, a row's prediction does not depend
on the other rows of the batch or their order, and the same random_state (or a clone refitted) gives
identical predictions.

Batch independence is the delicate one: BLAS rounds a row differently at different positions of a
batch (~1e-7 relative), so wherever neighbour distances tie up to rounding (duplicated rows, inputs
scaled by 1e-6 or 1e6) the neighbours chosen must not depend on that rounding. NeighborIndex ranks
its candidates by float64 distance and then id, and counts distances within rounding of 0 as 0.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone, is_classifier

from tests._estimators import fast_estimators

FAST = {"max_epochs": 3, "batch_size": 16, "random_state": 0, "device": "cpu"}
ROSTER = fast_estimators(
    "semiparametric",
    "parametric",
    "nonparametric",
    "mbpa",
    "meta-neighborhoods-classifier",
    "meta-neighborhoods-regressor",
    "nngk",
    "impostor",
    n_neighbors=2,
    **FAST,
)  # n_neighbors=2: the smallest data set has 2 rows
ESTIMATORS, IDS = list(ROSTER.values()), list(ROSTER)
# Entries in [-1, 1] times a scale up to 1e6: large enough to stress the arithmetic, small enough that
# float32 holds the squares.
VALUES = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False, width=32)
SCALES = st.sampled_from([1e-6, 1.0, 1e3, 1e6])


SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same examples in every run: CI cannot flake on a new one
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def datasets(draw, classifier):
    n = draw(st.integers(2, 60))
    d = draw(st.integers(1, 8))
    scale = draw(SCALES)
    X = draw(arrays(np.float64, (n, d), elements=VALUES)) * scale
    if classifier:
        n_classes = draw(st.integers(2, min(4, n)))
        y = np.arange(n) % n_classes  # every class present
        y = draw(st.permutations(y.tolist()))
        y = np.asarray(y)
    else:
        y = draw(arrays(np.float64, n, elements=VALUES)) * draw(SCALES)
    return X, y, scale


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on 3 epochs
        return clone(est).fit(X, y)


def _outputs(model, X):
    return model.predict_proba(X) if is_classifier(model) else model.predict(X)


@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_any_finite_data_gives_valid_predictions(est):
    classifier = is_classifier(est)

    @SETTINGS
    @given(data=datasets(classifier))
    def check(data):
        X, y, scale = data
        model = _fit(est, X, y)
        pred = model.predict(X)
        assert pred.shape == (len(X),)
        if classifier:
            assert set(np.unique(pred)) <= set(model.classes_)
            proba = model.predict_proba(X)
            assert proba.shape == (len(X), len(model.classes_))
            assert np.all(np.isfinite(proba)) and np.all(proba >= 0) and np.all(proba <= 1)
            np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
        else:
            assert np.all(np.isfinite(pred))

        # A row's output does not depend on the other rows of the batch or their order.
        out = _outputs(model, X)
        order = np.random.default_rng(0).permutation(len(X))
        np.testing.assert_allclose(_outputs(model, X[order]), out[order], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_outputs(model, X[:1]), out[:1], rtol=1e-4, atol=1e-5)

        # Same random_state, same model; a clone refitted reproduces it.
        np.testing.assert_array_equal(_outputs(_fit(est, X, y), X), out)
        np.testing.assert_array_equal(_outputs(_fit(clone(model), X, y), X), out)

    check()


@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_duplicated_rows_with_conflicting_labels_give_batch_independent_outputs(est, scale):
    # 37 copies of one row with all three labels, and 8 copies of another: which copy is "nearer" to a
    # query is float rounding that depends on the query's place in the batch, unless the index ranks
    # ties by id (before float64 re-scoring, ImpostorClassifier's outputs moved here).
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 2)) * scale
    X[:37], X[37:45] = 0.6622 * scale, 0.075 * scale
    y = np.arange(60) % 3
    rng.shuffle(y)
    if not is_classifier(est):
        y = y.astype(float)
    model = _fit(est, X, y)
    out = _outputs(model, X)
    order = rng.permutation(60)
    np.testing.assert_allclose(_outputs(model, X[order]), out[order], rtol=1e-4, atol=1e-5)
    for row in (0, 37, 50):
        np.testing.assert_allclose(
            _outputs(model, X[row : row + 1]), out[row : row + 1], rtol=1e-4, atol=1e-5
        )
