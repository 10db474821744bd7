"""scikit-learn's estimator checks for every public estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sksemiparam import (
    ImpostorClassifier,
    MbPAClassifier,
    MetaNeighborhoodsClassifier,
    MetaNeighborhoodsRegressor,
    NNGKClassifier,
    SemiparametricClassifier,
)

# Settings that keep each check fast while leaving defaults that matter to the checks intact.
FAST_PARAMS = {"max_epochs": 30, "random_state": 0, "device": "cpu"}

ESTIMATORS = [
    *(
        SemiparametricClassifier(mode, **FAST_PARAMS)
        for mode in ("semiparametric", "parametric", "nonparametric")
    ),
    *(MbPAClassifier(inference, **FAST_PARAMS) for inference in ("adapt", "memory", "mixture")),
    MetaNeighborhoodsRegressor(n_entries=16, head_layer_sizes=(32,), **FAST_PARAMS),
    MetaNeighborhoodsClassifier(n_entries=16, **FAST_PARAMS),
    MetaNeighborhoodsClassifier(n_entries=16, n_neighbors=4, **FAST_PARAMS),
    MetaNeighborhoodsRegressor(
        n_entries=16, head_layer_sizes=(32,), inner_lr="diagonal", first_order=True, **FAST_PARAMS
    ),
    NNGKClassifier(n_neighbors=8, **FAST_PARAMS),
    NNGKClassifier(n_neighbors=None, learn_sigma=True, refresh_every=3, **FAST_PARAMS),
    ImpostorClassifier(n_neighbors=8, **FAST_PARAMS),
    ImpostorClassifier(centers="fixed", n_neighbors=8, quantize="pq", pq_subspaces=8, **FAST_PARAMS),
]


# No expected failures. check_methods_subset_invariance and check_methods_sample_order_invariance
# compare a row predicted alone with the same row in a batch at rtol=1e-7; in float32, BLAS sums a
# one-row product in another order than a batch's (~1e-7 relative apart), so on the CPU predictions
# compute in float64 (sksemiparam._base._Float64Predictions), which holds each row to ~1e-15 of
# itself whatever its batch; tests/test_batch_invariance.py checks that to rtol=1e-12.


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
