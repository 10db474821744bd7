"""Every public estimator with fast settings, by name: the one roster of the cross-estimator tests.

A test module takes its estimators from here by name (its pytest ids are these names), never from a
list of its own. ``fast_estimators()`` with no name gives the configurations every cross-estimator
test runs on (``DEFAULT``); the other variants (other inference modes, a dense NNGK, ...) are given by
name only, to the modules that check them (test_common.py runs scikit-learn's checks on them).
"""

from sksemiparam import (
    ImpostorClassifier,
    MbPAClassifier,
    MetaNeighborhoodsClassifier,
    MetaNeighborhoodsRegressor,
    NNGKClassifier,
    SemiparametricClassifier,
)

DEFAULT = (
    "semiparametric",
    "parametric",
    "nonparametric",
    "mbpa",
    "meta-neighborhoods-classifier",
    "meta-neighborhoods-regressor",
    "nngk",
    "impostor",
    "impostor-pq",
)


def fast_estimators(*names, n_neighbors=4, n_entries=8, n_add=2, **params):
    """The named configurations (``DEFAULT`` when no name is given), each built with ``params``.

    ``n_neighbors`` is the neighbour count of the estimators that retrieve a fixed number of stored
    examples (MbPA, NNGK, Impostor, Meta-Neighborhoods "-knn"); it must not exceed the smallest
    training set of the test. ``n_entries`` is the Meta-Neighborhoods dictionary size, ``n_add`` the
    centres "impostor" adds per ``partial_fit`` (None: every new example, as its pq variants do).
    Only the named configurations are built, so ``params`` need only suit those.
    """
    k = n_neighbors
    roster = {
        "semiparametric": lambda: SemiparametricClassifier(**params),
        "parametric": lambda: SemiparametricClassifier("parametric", **params),
        "nonparametric": lambda: SemiparametricClassifier("nonparametric", **params),
        "mbpa": lambda: MbPAClassifier(n_neighbors=k, **params),
        "meta-neighborhoods-classifier": lambda: MetaNeighborhoodsClassifier(n_entries=n_entries, **params),
        "meta-neighborhoods-regressor": lambda: MetaNeighborhoodsRegressor(n_entries=n_entries, **params),
        "nngk": lambda: NNGKClassifier(n_neighbors=k, **params),
        "impostor": lambda: ImpostorClassifier(n_neighbors=k, n_add=n_add, **params),
        "impostor-pq": lambda: ImpostorClassifier(n_neighbors=k, quantize="pq", pq_subspaces=4, **params),
        # Variants, by name only.
        "mbpa-memory": lambda: MbPAClassifier("memory", n_neighbors=k, **params),
        "mbpa-mixture": lambda: MbPAClassifier("mixture", n_neighbors=k, **params),
        "meta-neighborhoods-classifier-knn": lambda: MetaNeighborhoodsClassifier(
            n_entries=n_entries, n_neighbors=k, **params
        ),
        "meta-neighborhoods-regressor-diagonal": lambda: MetaNeighborhoodsRegressor(
            n_entries=n_entries, inner_lr="diagonal", first_order=True, **params
        ),
        "nngk-dense": lambda: NNGKClassifier(n_neighbors=None, learn_sigma=True, refresh_every=3, **params),
        # The papers' procedure: each training step searches the nearest centres (the default
        # draws candidates at random).
        "nngk-search": lambda: NNGKClassifier(n_neighbors=k, candidates=None, **params),
        "impostor-search": lambda: ImpostorClassifier(n_neighbors=k, candidates=None, n_add=n_add, **params),
        "impostor-fixed-pq": lambda: ImpostorClassifier(
            centers="fixed", n_neighbors=k, quantize="pq", pq_subspaces=8, **params
        ),
    }
    unknown = sorted(set(names) - set(roster))
    if unknown:
        raise KeyError(f"not in the roster: {unknown}")
    return {name: roster[name]() for name in names or DEFAULT}
