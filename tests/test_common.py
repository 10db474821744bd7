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
        "nngk",
        "nngk-dense",
        "nngk-search",
        "impostor",
        "impostor-search",
        "impostor-fixed-pq",
        n_neighbors=8,
        n_add=None,
        **FAST_PARAMS,
    ),
}
ESTIMATORS = list(ROSTER.values())


# No expected failures. check_methods_subset_invariance and check_methods_sample_order_invariance
# compare a row predicted alone with the same row in a batch at rtol=1e-7; in float32, BLAS sums a
# one-row product in another order than a batch's (~1e-7 relative apart), so on the CPU predictions
# compute in float64 (sksemiparam._base._Float64Predictions), which holds each row to ~1e-15 of
# itself whatever its batch; tests/test_batch_invariance.py checks that to rtol=1e-12.


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
