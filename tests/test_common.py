"""scikit-learn's estimator checks for every public estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from tests._estimators import fast_estimators

# Settings that keep each check fast while leaving defaults that matter to the checks intact.
FAST_PARAMS = {"max_epochs": 30, "random_state": 0, "device": "cpu"}

# Every configuration of the roster that scikit-learn checks, grouped by the sizes they run with:
# MbPA with its default n_neighbors="auto", ImpostorClassifier with its default n_add=None.
ROSTER = {
    **fast_estimators("semiparametric", "parametric", "nonparametric", **FAST_PARAMS),
    **fast_estimators("mbpa", "mbpa-memory", "mbpa-mixture", n_neighbors="auto", **FAST_PARAMS),
    **fast_estimators(
        "meta-neighborhoods-classifier",
        "meta-neighborhoods-classifier-knn",
        n_entries=16,
        n_neighbors=4,
        **FAST_PARAMS,
    ),
    **fast_estimators(
        "meta-neighborhoods-regressor",
        "meta-neighborhoods-regressor-diagonal",
        n_entries=16,
        head_layer_sizes=(32,),
        **FAST_PARAMS,
    ),
    **fast_estimators(
        "nngk", "nngk-dense", "impostor", "impostor-fixed-pq", n_neighbors=8, n_add=None, **FAST_PARAMS
    ),
}
ESTIMATORS = list(ROSTER.values())


# The networks compute in float32. BLAS picks its kernels by a row's position in the batch, so a row's
# output can move by ~1 ulp (1e-7 relative) when the other rows change: below these checks' float64
# tolerance of rtol=1e-7 only by luck. Invariance to 1e-5 is tested in test_semiparametric.py.
FLOAT32_REASON = "float32 BLAS: ~1e-7 relative row-position noise; tested to 1e-5 in our own tests"


def expected_failed_checks(estimator):
    return {
        "check_methods_sample_order_invariance": FLOAT32_REASON,
        "check_methods_subset_invariance": FLOAT32_REASON,
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
