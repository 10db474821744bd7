"""Every bad input gets a specific exception whose message names the problem, for every estimator,
and a call that fails leaves a fitted estimator exactly as it was.

One table (``CASES``): each row is a way to call an estimator wrongly, the exception it must raise
and a pattern its message must match. The table runs against every public estimator, unfitted and
(for data errors) fitted, through ``fit``, ``partial_fit`` and warm-started ``fit``.
"""

import copy
import re
from numbers import Real

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone, is_classifier
from sklearn.utils._param_validation import Interval

from tests._estimators import DEFAULT, fast_estimators

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.DataConversionWarning"),  # the 2-D y case
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),  # the 1e39 case
]

FAST = {"max_epochs": 2, "random_state": 0, "device": "cpu"}
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

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 4)).astype(np.float32)
Y_CLASS = np.arange(40) % 3
Y_REG = rng.normal(size=40)


def _with(value):
    bad = X.copy().astype(np.float64)
    bad[3, 1] = value
    return bad


def _objects():
    bad = X.astype(object)
    bad[0, 0] = "a"
    return bad


# (name, X, y, exception, message pattern): data errors, raised by fit, partial_fit and warm fit.
DATA_CASES = [
    ("NaN in X", _with(np.nan), None, ValueError, "Input X contains NaN"),
    ("+inf in X", _with(np.inf), None, ValueError, "Input X contains infinity"),
    ("-inf in X", _with(-np.inf), None, ValueError, "Input X contains infinity"),
    ("too large for float32", _with(1e39), None, ValueError, "infinity or a value too large"),
    ("empty X", X[:0], "empty", ValueError, r"0 sample\(s\)"),
    ("1-D X", X[:, 0], None, ValueError, "Expected 2D array, got 1D array"),
    ("3-D X", X[:, :, None], None, ValueError, "Found array with dim 3"),
    ("complex X", X + 1j, None, ValueError, "Complex data not supported"),
    ("object X with a string", _objects(), None, ValueError, "could not convert string to float: 'a'"),
    ("sparse X", sp.csr_matrix(X), None, TypeError, "Sparse data was passed .* but dense data is required"),
    ("y of the wrong length", X, "short", ValueError, r"inconsistent numbers of samples: \[40, 39\]"),
    ("y 2-D column of wrong length", X, "2d-short", ValueError, "inconsistent numbers of samples"),
]
CLASSIFIER_DATA_CASES = [
    ("NaN label", X, "nan-label", ValueError, "Input y contains NaN"),
]
REGRESSOR_DATA_CASES = [
    ("NaN in y", X, "nan", ValueError, "Input y contains NaN"),
    ("inf in y", X, "inf", ValueError, "Input y contains infinity"),
    ("string y", X, "strings", ValueError, "could not convert string to float"),
]


def _y(est, spec):
    y = (Y_CLASS if is_classifier(est) else Y_REG).copy()
    if spec is None:
        return y
    if spec == "empty":
        return y[:0]
    if spec == "short":
        return y[:-1]
    if spec == "2d-short":
        return y[:-1, None]
    if spec == "nan-label":
        y = y.astype(float)
        y[2] = np.nan
        return y
    if spec in ("nan", "inf"):
        y[2] = np.nan if spec == "nan" else np.inf
        return y
    if spec == "strings":
        return np.array(["a"] * len(y), dtype=object)
    raise AssertionError(spec)


def _data_cases(est):
    extra = CLASSIFIER_DATA_CASES if is_classifier(est) else REGRESSOR_DATA_CASES
    return DATA_CASES + extra


@pytest.fixture(scope="module")
def fitted():
    """Each estimator fitted once on good data (tests work on deep copies)."""
    return {name: clone(est).fit(X, _y(est, None)) for name, est in ESTIMATORS.items()}


def _partial_fit(est, X_, y_):
    kwargs = {"classes": np.unique(Y_CLASS)} if is_classifier(est) and not hasattr(est, "classes_") else {}
    return est.partial_fit(X_, y_, **kwargs)


def _warm_fit(est, X_, y_):
    return est.set_params(warm_start=True).fit(X_, y_)


CALLS = {"fit": lambda est, X_, y_: est.fit(X_, y_), "partial_fit": _partial_fit, "warm fit": _warm_fit}


def _state(est):
    """What a failed call must not change: predictions and the fitted attributes."""
    outputs = est.predict_proba(X) if is_classifier(est) else est.predict(X)
    fitted_attrs = {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}
    return outputs, sorted(fitted_attrs), est.n_iter_, len(est.loss_curve_)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_bad_data_raises_a_clear_error_and_leaves_the_model_as_it_was(name, fitted):
    est = ESTIMATORS[name]
    for case, X_bad, y_spec, exc, pattern in _data_cases(est):
        y_bad = _y(est, y_spec)
        with pytest.raises(exc, match=pattern):  # unfitted
            clone(est).fit(X_bad, y_bad)
        for call_name, call in CALLS.items():
            model = copy.deepcopy(fitted[name])
            before = _state(model)
            params = model.get_params()
            with pytest.raises(exc, match=pattern) as info:
                call(model, X_bad, y_bad)
            assert info.type is exc, (case, call_name)
            model.set_params(**params)
            after = _state(model)
            np.testing.assert_array_equal(after[0], before[0], err_msg=f"{case} via {call_name}")
            assert after[1:] == before[1:], (case, call_name)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_predict_with_bad_data(name, fitted):
    model = copy.deepcopy(fitted[name])
    before = _state(model)
    methods = ["predict"] + (["predict_proba"] if is_classifier(model) else [])
    for method in methods:
        f = getattr(model, method)
        with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 4 features as input"):
            f(X[:, :3])
        with pytest.raises(ValueError, match="Input X contains NaN"):
            f(_with(np.nan))
        with pytest.raises(ValueError, match="Input X contains infinity"):
            f(_with(np.inf))
        with pytest.raises(TypeError, match="Sparse data was passed"):
            f(sp.csr_matrix(X))
        with pytest.raises(ValueError, match="Expected 2D array"):
            f(X[0])
        with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):  # as MLPClassifier
            f(X[:0])
    after = _state(model)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:] == before[1:]


@pytest.mark.parametrize("name", [n for n, e in ESTIMATORS.items() if is_classifier(e)])
def test_classifier_label_errors(name, fitted):
    est = ESTIMATORS[name]
    # String labels work, and come back as strings.
    labels = np.array(["cat", "dog", "eel"])[Y_CLASS]
    model = clone(est).fit(X, labels)
    assert set(model.predict(X)) <= {"cat", "dog", "eel"}
    with pytest.raises(ValueError, match=r"`y` has only one class \('cat'\); a classifier needs at least 2"):
        clone(est).fit(X, np.full(len(X), "cat"))
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        clone(est).partial_fit(X, Y_CLASS)
    with pytest.raises(ValueError, match="`classes` has 1 class; a classifier needs at least 2 classes"):
        clone(est).partial_fit(X, np.zeros(len(X), int), classes=[0])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        clone(est).fit(X, Y_REG)
    model = copy.deepcopy(fitted[name])
    before = _state(model)
    with pytest.raises(
        ValueError,
        match=r"`classes=\[0, 1\]` is not the same as on last call to partial_fit, was: \[0, 1, 2\]",
    ):
        model.partial_fit(X, Y_CLASS, classes=[0, 1])
    with pytest.raises(ValueError, match=r"`y` has classes not in `self.classes_`.* 'y' has .*7"):
        model.partial_fit(X, np.where(Y_CLASS == 2, 7, Y_CLASS))
    with pytest.raises(ValueError, match="has classes not in"):  # warm start cannot add a class either
        model.set_params(warm_start=True).fit(X, np.where(Y_CLASS == 2, 7, Y_CLASS))
    model.set_params(warm_start=False)
    np.testing.assert_array_equal(_state(model)[0], before[0])


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_bad_n_neighbors(name):
    est = ESTIMATORS[name]
    y = _y(est, None)
    for value in (0, -3):
        with pytest.raises(ValueError, match=r"The 'n_neighbors' parameter of \w+ must be"):
            clone(est).set_params(n_neighbors=value).fit(X, y)
    with pytest.raises(ValueError, match="The 'n_neighbors' parameter"):
        clone(est).set_params(n_neighbors=2.5).fit(X, y)
    # More neighbours than the memory (or the dictionary) holds.
    with pytest.raises(ValueError, match=r"`n_neighbors`=\d+ is larger than the \d+"):
        clone(est).set_params(n_neighbors=1000).fit(X, y)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_non_finite_hyperparameters(name):
    est = ESTIMATORS[name]
    y = _y(est, None)
    real = [
        p
        for p, constraints in est._parameter_constraints.items()
        if any(isinstance(c, Interval) and c.type is Real for c in constraints)
    ]
    assert {"learning_rate", "weight_decay", "tol"} <= set(real)
    for param in real:
        for value in (np.nan, np.inf, -np.inf):
            with pytest.raises(ValueError, match=rf"The '{param}' parameter of \w+ must be .* Got {value}"):
                clone(est).set_params(**{param: value}).fit(X, y)


# X far beyond the network's float32 range: no error of validate_data (the values are finite), but
# the network's arithmetic overflows.
HUGE = fast_estimators(*DEFAULT, max_epochs=3, random_state=0, device="cpu")
OVERFLOW = r"overflowed to NaN or infinity in float32: the values of X are too large .*StandardScaler"
X60 = np.random.default_rng(1).normal(size=(60, 4))
Y60_CLASS = np.arange(60) % 3


def _finite_outputs(model, X_):
    """The model's predictions on X_ are finite, or predicting raises the overflow error."""
    try:
        out = model.predict_proba(X_) if is_classifier(model) else model.predict(X_)
    except ValueError as exc:
        assert re.search(OVERFLOW, str(exc)), str(exc)
        return False
    assert np.isfinite(out).all()
    return True


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's own overflow warnings on the way
@pytest.mark.parametrize("scale", [1e20, 1e30])
@pytest.mark.parametrize("name", DEFAULT)
def test_huge_X_gives_finite_predictions_or_a_clear_error(name, scale):
    """Every estimator either predicts finite values or raises a ValueError that names the overflow
    and suggests scaling X, never NaN predictions nor the neighbour index's "`keys` contains NaN";
    a call that fails leaves a fitted model as it was."""
    est = HUGE[name]
    y = Y60_CLASS if is_classifier(est) else X60[:, 0]
    huge = X60 * scale
    try:
        model = clone(est).fit(huge, y)
    except ValueError as exc:
        assert re.search(OVERFLOW, str(exc)), str(exc)
        assert "(the largest |X| is" in str(exc) or "embeddings" in str(exc)
    else:
        _finite_outputs(model, huge)
    good = clone(est).fit(X60, y)
    _finite_outputs(good, huge)
    for call_name, call in CALLS.items():
        model = copy.deepcopy(good)
        before = (_state(model), copy.deepcopy(model.module_.state_dict()))
        params = model.get_params()
        try:
            call(model, huge, y)
        except ValueError as exc:
            assert re.search(OVERFLOW, str(exc)), (call_name, str(exc))
            model.set_params(**params)
            after = (_state(model), model.module_.state_dict())
            np.testing.assert_array_equal(after[0][0], before[0][0], err_msg=call_name)
            assert after[0][1:] == before[0][1:], call_name
            for key, value in before[1].items():
                torch.testing.assert_close(after[1][key], value, rtol=0, atol=0)
        else:
            _finite_outputs(model, huge)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["semiparametric", "meta-neighborhoods-regressor", "nngk", "impostor"])
def test_huge_X_is_an_error_where_training_overflows(name):
    """Where these returned NaN predictions or the index's "`keys` contains NaN or infinity" (issue
    18), the error now names the overflow (so the test above is not vacuous)."""
    est = HUGE[name]
    y = Y60_CLASS if is_classifier(est) else X60[:, 0]
    with pytest.raises(ValueError, match=OVERFLOW):
        clone(est).fit(X60 * 1e20, y)
