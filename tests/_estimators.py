"""Every public estimator with fast settings, by name: the roster of the cross-estimator tests."""

from sksemiparam import (
    ImpostorClassifier,
    MbPAClassifier,
    MetaNeighborhoodsClassifier,
    MetaNeighborhoodsRegressor,
    NNGKClassifier,
    SemiparametricClassifier,
)


def fast_estimators(*names, n_neighbors=4, **params):
    """The named configurations (all when no name is given), each built with ``params``.

    ``n_neighbors`` is the neighbour count of the estimators that retrieve a fixed number of stored
    examples (MbPA, NNGK, Impostor); it must not exceed the smallest training set of the test.
    """
    roster = {
        "semiparametric": SemiparametricClassifier(**params),
        "parametric": SemiparametricClassifier("parametric", **params),
        "nonparametric": SemiparametricClassifier("nonparametric", **params),
        "mbpa": MbPAClassifier(n_neighbors=n_neighbors, **params),
        "meta-neighborhoods-classifier": MetaNeighborhoodsClassifier(n_entries=8, **params),
        "meta-neighborhoods-regressor": MetaNeighborhoodsRegressor(n_entries=8, **params),
        "nngk": NNGKClassifier(n_neighbors=n_neighbors, **params),
        "impostor": ImpostorClassifier(n_neighbors=n_neighbors, n_add=2, **params),
        "impostor-pq": ImpostorClassifier(n_neighbors=n_neighbors, quantize="pq", pq_subspaces=4, **params),
    }
    return {name: roster[name] for name in names} if names else roster
