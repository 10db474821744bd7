"""Every public parameter and fitted attribute of every estimator is documented in its numpydoc docstring.

The API reference is generated from these docstrings, so a parameter missing here is missing from the
documentation site. Fitted attributes are found on small fitted models (``fit`` with early stopping,
``end_task`` and a ``partial_fit``, on a DataFrame so that ``feature_names_in_`` exists too): every
public instance attribute ending in ``_``, and every public property ending in ``_`` (derived fitted
state such as ``bytes_per_center_``, documented as attributes in scikit-learn too).
"""

import ast
import re
import warnings

import numpy as np
import pytest
from numpydoc.docscrape import ClassDoc
from sklearn.base import is_regressor

from ._estimators import fast_estimators

ROSTER = fast_estimators()


def _entries(doc, section):
    """{name: (type, description)} of a numpydoc section; ``a, b : type`` documents both names."""
    entries = {}
    for item in doc[section]:
        for name in item.name.split(","):
            entries[name.strip()] = (item.type, " ".join(item.desc).strip())
    return entries


def _fitted_attributes(estimator):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(48, 4)).astype(np.float32), columns=["a", "b", "c", "d"])
    y = X["a"].to_numpy() if is_regressor(estimator) else np.arange(48) % 2
    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for params in ({}, {"early_stopping": True, "validation_fraction": 0.25, "ewc_lambda": 1.0}):
            params = {**estimator.get_params(), **params, "max_epochs": 2, "random_state": 0}
            est = estimator.__class__(**params)
            est.fit(X, y)
            est.end_task(X, y)
            est.partial_fit(X, y)
            found |= {name for name in vars(est) if name.endswith("_") and not name.startswith("_")}
            found |= {
                name
                for name in dir(type(est))
                if name.endswith("_")
                and not name.startswith("_")
                and isinstance(getattr(type(est), name), property)
            }
    return found


@pytest.mark.parametrize("name", list(ROSTER))
def test_every_parameter_is_documented(name):
    estimator = ROSTER[name]
    documented = _entries(ClassDoc(type(estimator)), "Parameters")
    params = type(estimator)().get_params()
    missing = sorted(set(params) - set(documented))
    assert not missing, f"{type(estimator).__name__}: parameters without a docstring entry: {missing}"
    stale = sorted(set(documented) - set(params))
    assert not stale, f"{type(estimator).__name__}: documented parameters that do not exist: {stale}"
    empty = sorted(p for p, (_, desc) in documented.items() if not desc)
    assert not empty, f"{type(estimator).__name__}: parameters without a description: {empty}"
    for param, (type_, _) in documented.items():
        match = re.search(r"default=(.+)$", type_)
        if not match:
            continue
        try:
            stated = ast.literal_eval(match.group(1).strip())
        except (ValueError, SyntaxError):
            continue
        assert stated == params[param], (
            f"{type(estimator).__name__}: `{param}` is documented with default={match.group(1)} "
            f"but defaults to {params[param]!r}"
        )


@pytest.mark.parametrize("name", list(ROSTER))
def test_every_fitted_attribute_is_documented(name):
    estimator = ROSTER[name]
    documented = _entries(ClassDoc(type(estimator)), "Attributes")
    found = _fitted_attributes(estimator)
    missing = sorted(found - set(documented))
    assert not missing, f"{type(estimator).__name__}: fitted attributes without a docstring entry: {missing}"
    stale = sorted(set(documented) - found)
    assert not stale, f"{type(estimator).__name__}: documented attributes no fitted model has: {stale}"
    empty = sorted(a for a, (_, desc) in documented.items() if not desc)
    assert not empty, f"{type(estimator).__name__}: attributes without a description: {empty}"


def test_shared_entries_are_filled_in_at_the_markers_indentation():
    from sksemiparam import _docstrings

    doc = "Estimator.\n\n    Parameters\n    ----------\n    .. shared:: max_epochs tol\n    other : int\n"
    filled = _docstrings.fill(doc)
    assert ".. shared::" not in filled
    assert "    max_epochs : int, default=100\n        Maximum passes" in filled
    assert "    tol : float, default=1e-4\n        Smallest change" in filled
    assert filled.endswith("    other : int\n")
    # Python 3.13 strips docstrings' common indentation: a marker at column 0 gives entries there.
    assert _docstrings.fill(".. shared:: max_epochs").startswith("max_epochs : int, default=100\n    Maximum")
    assert _docstrings.fill(None) is None  # python -OO
    with pytest.raises(KeyError, match="no shared docstring entry 'max_epoch'"):
        _docstrings.fill("    .. shared:: max_epoch")


@pytest.mark.parametrize("name", sorted(ROSTER))
def test_no_marker_is_left_in_a_docstring(name):
    assert ".. shared::" not in type(ROSTER[name]).__doc__
