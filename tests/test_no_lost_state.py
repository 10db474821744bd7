"""A call that fails mid-training leaves the estimator exactly as before; Ctrl-C stops training cleanly.

Failures are injected from inside the training loop (after a few optimizer steps, when the network,
the optimizer and the memories have already changed), for every estimator and through
``partial_fit``, warm-started ``fit`` and a fresh ``fit``.
"""

import copy
import signal

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests._estimators import fast_estimators

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"max_epochs": 3, "batch_size": 10, "random_state": 0, "device": "cpu"}
ESTIMATORS = fast_estimators(
    "semiparametric",
    "mbpa",
    "meta-neighborhoods-classifier",
    "meta-neighborhoods-regressor",
    "nngk",
    "impostor",
    **FAST,
)

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 4)).astype(np.float32)
X_more = rng.normal(size=(30, 4)).astype(np.float32)


def _y(est, n):
    return np.arange(n) % 3 if is_classifier(est) else rng.normal(size=n)


class Boom(Exception):
    pass


def _after_steps(est, n_steps, action):
    """Make ``action()`` run after the ``n_steps``-th optimizer step of the next calls."""
    original = est._after_step
    count = [0]

    def hook(*args, **kwargs):
        original(*args, **kwargs)
        count[0] += 1
        if count[0] == n_steps:
            action()

    est._after_step = hook
    return lambda: est.__dict__.pop("_after_step", None)


def _raise_boom():
    raise Boom("injected failure")


def _outputs(est, X_):
    return est.predict_proba(X_) if is_classifier(est) else est.predict(X_)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_call_failing_mid_training_leaves_the_model_as_before(name):
    est = ESTIMATORS[name]
    y, y_more = _y(est, 60), _y(est, 30)
    kwargs = {"classes": [0, 1, 2]} if is_classifier(est) else {}
    model = clone(est).partial_fit(X, y, **kwargs)
    twin = copy.deepcopy(model)
    before = _outputs(model, X)
    for call in ("partial_fit", "warm fit"):
        undo = _after_steps(model, 2, _raise_boom)
        with pytest.raises(Boom):
            if call == "partial_fit":
                model.partial_fit(X_more, y_more)
            else:
                model.set_params(warm_start=True).fit(X_more, y_more)
        undo()
        model.set_params(warm_start=False)
        np.testing.assert_array_equal(_outputs(model, X), before, err_msg=call)
        assert model.n_iter_ == twin.n_iter_ and model.loss_curve_ == twin.loss_curve_
    # Continuing after the failures gives exactly what the twin that never failed gives: the
    # optimizer state, the random generator and the memories were restored too.
    model.partial_fit(X_more, y_more)
    twin.partial_fit(X_more, y_more)
    np.testing.assert_array_equal(_outputs(model, X), _outputs(twin, X))


@pytest.mark.parametrize("name", ["semiparametric", "nngk"])
def test_a_failed_fit_leaves_a_fitted_model_as_before_and_an_unfitted_one_unfitted(name):
    est = ESTIMATORS[name]
    y = _y(est, 60)
    fresh = clone(est)
    fresh._set_by_a_caller = "kept"  # as scikit-learn's callback machinery does inside a Pipeline
    undo = _after_steps(fresh, 3, _raise_boom)
    with pytest.raises(Boom):
        fresh.fit(X, y)
    undo()
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    assert set(vars(fresh)) == set(fresh.get_params(deep=False)) | {"_set_by_a_caller"}
    fitted = clone(est).fit(X, y)
    before = _outputs(fitted, X)
    undo = _after_steps(fitted, 3, _raise_boom)
    with pytest.raises(Boom):
        fitted.fit(X_more[:, :3], y[:30])  # a different task, failing mid-training
    undo()
    np.testing.assert_array_equal(_outputs(fitted, X), before)
    assert fitted.n_features_in_ == 4


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_ctrl_c_stops_at_a_batch_boundary_with_a_usable_model(name):
    est = ESTIMATORS[name]
    y = _y(est, 60)
    model = clone(est).set_params(max_epochs=5)
    # 60 rows in batches of 10: step 9 is in the second epoch.
    undo = _after_steps(model, 9, lambda: signal.raise_signal(signal.SIGINT))
    with pytest.warns(UserWarning, match=r"interrupted \(KeyboardInterrupt\) during epoch 2.*n_iter_=1"):
        model.fit(X, y)
    undo()
    assert model.n_iter_ == 1 and len(model.loss_curve_) == 1
    assert np.all(np.isfinite(_outputs(model, X)))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # Training goes on from there.
    model.partial_fit(X, y)
    assert model.n_iter_ > 1


def test_a_second_ctrl_c_aborts_and_leaves_the_model_as_before():
    est = ESTIMATORS["semiparametric"]
    y = _y(est, 60)
    model = clone(est).fit(X, y)
    before = _outputs(model, X)

    def twice():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    undo = _after_steps(model, 2, twice)
    with pytest.raises(KeyboardInterrupt):
        model.partial_fit(X, y)
    undo()
    np.testing.assert_array_equal(_outputs(model, X), before)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("name", ["semiparametric", "mbpa"])
def test_a_failed_first_fit_inside_a_meta_estimator_raises_its_own_error(name):
    # The failed fit once deleted every attribute but the parameters, also the one scikit-learn's
    # Pipeline had set, so the user saw an AttributeError about `_parent_callback_ctx` instead.
    X_nan = X.copy()
    X_nan[3, 1] = np.nan  # StandardScaler lets NaN through; the estimator refuses it
    pipe = make_pipeline(StandardScaler(), clone(ESTIMATORS[name]))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        pipe.fit(X_nan, _y(ESTIMATORS[name], 60))
    # GridSearchCV sets (and afterwards deletes) the same kind of attribute on each candidate.
    search = GridSearchCV(clone(ESTIMATORS[name]), {"max_epochs": [1]}, cv=2, error_score="raise")
    with pytest.raises(ValueError, match="Input X contains NaN"):
        search.fit(X_nan, _y(ESTIMATORS[name], 60))
