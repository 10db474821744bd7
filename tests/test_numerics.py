"""Numerical hardening: data and settings at the edges never give NaN or inf in losses or outputs.

Duplicated rows (distance 0, where w = d^-tau and Gaussian kernels are at their extremes), constant
features, inputs scaled by 1e6 and 1e-6, and extreme kernel settings (a large tau or gamma, a tiny
sigma or kernel epsilon), for every estimator.
"""

import numpy as np
import pytest
from sklearn.base import clone, is_classifier

from tests._estimators import fast_estimators

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"max_epochs": 4, "batch_size": 16, "random_state": 0, "device": "cpu"}
ESTIMATORS = fast_estimators(
    "semiparametric",
    "nonparametric",
    "mbpa",
    "meta-neighborhoods-classifier",
    "meta-neighborhoods-regressor",
    "nngk",
    "impostor",
    **FAST,
)
# The kernel setting of each estimator pushed to its extremes. (tau < ~0.97 once overflowed the cap
# on d / d_min of the in-batch estimate: a RuntimeError at the first training step.)
EXTREME = {
    "semiparametric": ({"tau": 50.0}, {"tau": 0.25}),
    "nonparametric": ({"tau": 50.0}, {"tau": 0.25}),
    "mbpa": ({"kernel_epsilon": 1e-12},),
    "meta-neighborhoods-classifier": ({"gamma": 1e4},),
    "meta-neighborhoods-regressor": ({"gamma": 1e4},),
    "nngk": ({"sigma": 1e-6},),
    "impostor": ({"sigma": 1e-6},),
}

rng = np.random.default_rng(0)
BASE = rng.normal(size=(48, 5))


def _data(kind):
    X = BASE.copy()
    if kind == "duplicated rows":
        X = np.repeat(X[:16], 3, axis=0)
    elif kind == "constant features":
        X[:, :3] = 7.0
    elif kind == "all rows equal":
        X[:] = X[0]
    elif kind == "scaled by 1e6":
        X = X * 1e6
    elif kind == "scaled by 1e-6":
        X = X * 1e-6
    return X


def _check_finite(model, X):
    assert np.all(np.isfinite(model.loss_curve_)), model.loss_curve_
    if is_classifier(model):
        proba = model.predict_proba(X)
        assert np.all(np.isfinite(proba))
        np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    else:
        assert np.all(np.isfinite(model.predict(X)))


KINDS = ["duplicated rows", "constant features", "all rows equal", "scaled by 1e6", "scaled by 1e-6"]


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_edge_data_and_extreme_kernels_stay_finite(name):
    est = ESTIMATORS[name]
    for kind in KINDS:
        X = _data(kind)
        y = np.arange(len(X)) % 3 if is_classifier(est) else X[:, -1] + np.arange(len(X)) % 3
        for params in ({}, *EXTREME[name]):
            model = clone(est).set_params(**params).fit(X, y)
            _check_finite(model, X)
            # partial_fit on the same kind of data, and prediction on unseen rows at the same scale
            model.partial_fit(X[:10], y[:10])
            _check_finite(model, X)
            _check_finite(model, _data(kind)[::-1] * 1.5)
