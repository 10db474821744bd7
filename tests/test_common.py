"""scikit-learn's estimator checks for every public estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sksemiparam import SemiparametricClassifier

# Settings that keep each check fast while leaving defaults that matter to the checks intact.
FAST_PARAMS = {"max_epochs": 30, "random_state": 0, "device": "cpu"}

ESTIMATORS = [
    SemiparametricClassifier(mode, **FAST_PARAMS)
    for mode in ("semiparametric", "parametric", "nonparametric")
]


def expected_failed_checks(estimator):
    return {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
