"""The shared torch-estimator contract: seeding, device, partial_fit, early stopping, persistence."""

import io
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from sksemiparam._base import resolve_device
from tests._estimators import fast_estimators

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Every torch-backed classifier of the roster, with fast settings: MbPA with its default
# n_neighbors="auto", NNGK and Impostor with 8 neighbours and every new example a centre.
FAST = {"max_epochs": 5, "random_state": 0, "device": "cpu"}
ESTIMATORS = {
    **fast_estimators("semiparametric", "parametric", "nonparametric", **FAST),
    **fast_estimators("mbpa", n_neighbors="auto", **FAST),
    **fast_estimators(
        "meta-neighborhoods-classifier", "nngk", "impostor", n_entries=16, n_neighbors=8, n_add=None, **FAST
    ),
}


# ------------------------------------------------------------------------------------ seeding
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_same_seed_same_predictions_and_global_rng_untouched(name, blobs):
    est = ESTIMATORS[name]
    X, y = blobs
    X_new = X + np.random.default_rng(0).normal(scale=0.5, size=X.shape).astype(np.float32)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    p1 = clone(est).fit(X, y).predict_proba(X_new)
    assert torch.equal(torch.random.get_rng_state(), before)  # library never moves the global RNG
    torch.manual_seed(999)  # a different global state must not matter
    p2 = clone(est).fit(X, y).predict_proba(X_new)
    np.testing.assert_array_equal(p1, p2)
    p3 = clone(est).set_params(random_state=1).fit(X, y).predict_proba(X_new)
    assert not np.array_equal(p1, p3)


def test_random_state_instance_is_accepted(blobs):
    X, y = blobs
    p1 = (
        clone(ESTIMATORS["semiparametric"])
        .set_params(random_state=np.random.RandomState(3))
        .fit(X, y)
        .predict(X)
    )
    p2 = (
        clone(ESTIMATORS["semiparametric"])
        .set_params(random_state=np.random.RandomState(3))
        .fit(X, y)
        .predict(X)
    )
    np.testing.assert_array_equal(p1, p2)


# ------------------------------------------------------------------------------------ device
def test_resolve_device_on_cpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"`device`='cuda' was requested but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match=r"`device`='cuda:1' was requested but CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match=r"`device`='gpu' is not a device"):
        resolve_device("gpu")


def test_resolve_device_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\) exist"):
        resolve_device("cuda:2")


def test_fit_with_cuda_on_cpu_machine_is_a_clear_error(blobs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    X, y = blobs
    with pytest.raises(ValueError, match="CUDA is not available"):
        clone(ESTIMATORS["semiparametric"]).set_params(device="cuda").fit(X, y)
    est = clone(ESTIMATORS["semiparametric"]).fit(X, y)
    expected = est.predict(X)
    est.set_params(device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        est.predict(X)
    np.testing.assert_array_equal(est.set_params(device="auto").predict(X), expected)


# ------------------------------------------------------------------------------- partial_fit
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_partial_fit_class_errors_match_sgd(name, blobs):
    est = ESTIMATORS[name]
    X, y = blobs
    est = clone(est)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit."):
        est.partial_fit(X, y)
    est.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=re.escape("is not the same as on last call to partial_fit")):
        est.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=re.escape("`y` has classes not in `self.classes_`")):
        est.partial_fit(X, np.where(y == 2, 7, y))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_partial_fit_is_one_epoch_and_keeps_optimizer_state(name, blobs):
    est = ESTIMATORS[name]
    X, y = blobs
    est = clone(est).partial_fit(X, y, classes=np.unique(y))
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 1
    state = est._optimizer.state_dict()["state"]
    first = min(state)  # the first parameter that trains (a frozen one has no state)
    step = float(state[first]["step"])
    est.partial_fit(X, y)
    assert est.n_iter_ == 2
    assert float(est._optimizer.state_dict()["state"][first]["step"]) == 2 * step


def test_partial_fit_may_declare_classes_absent_from_the_first_batch(blobs):
    X, y = blobs
    est = clone(ESTIMATORS["semiparametric"]).partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert est.predict_proba(X).shape == (len(X), 3)
    est.partial_fit(X[y == 2], y[y == 2])
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])


def test_failed_partial_fit_leaves_the_model_unchanged(blobs):
    X, y = blobs
    est = clone(ESTIMATORS["semiparametric"]).fit(X, y)
    before = pickle.dumps(est)
    proba = est.predict_proba(X)
    with pytest.raises(ValueError):
        est.partial_fit(X[:, :3], y)  # wrong number of features
    with pytest.raises(ValueError):
        est.partial_fit(X, np.where(y == 2, 9, y))  # unseen label
    with pytest.raises(ValueError):
        est.partial_fit(X, y, classes=[0, 1])  # changed classes
    np.testing.assert_array_equal(est.predict_proba(X), proba)
    assert est.n_features_in_ == 4 and est.n_iter_ == pickle.loads(before).n_iter_


def test_warm_start_continues_training(blobs):
    X, y = blobs
    est = clone(ESTIMATORS["parametric"]).set_params(
        warm_start=True, max_epochs=3, tol=0.0, n_iter_no_change=100
    )
    est.fit(X, y)
    weights = [p.detach().clone() for p in est.module_.parameters()]
    est.fit(X, y)
    assert est.n_iter_ == 6 and len(est.loss_curve_) == 6
    assert any(not torch.equal(a, b) for a, b in zip(weights, est.module_.parameters()))
    cold = clone(est).set_params(warm_start=False).fit(X, y)
    assert cold.n_iter_ == 3


def test_warm_start_with_a_new_class_is_an_error(blobs):
    X, y = blobs
    est = clone(ESTIMATORS["parametric"]).set_params(warm_start=True).fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        est.fit(X, y)


# --------------------------------------------------------------------------- stopping rules
def test_convergence_stops_before_max_epochs_and_warns_otherwise(blobs):
    X, y = blobs
    est = clone(ESTIMATORS["parametric"]).set_params(max_epochs=500, tol=0.5, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X, y)
    assert est.n_iter_ < 500
    with pytest.warns(ConvergenceWarning, match="max_epochs=2 reached"):
        clone(est).set_params(max_epochs=2, tol=0.0).fit(X, y)


def test_early_stopping_records_validation_scores_and_keeps_the_best(blobs):
    X, y = blobs
    est = clone(ESTIMATORS["semiparametric"]).set_params(
        early_stopping=True, max_epochs=60, n_iter_no_change=3, validation_fraction=0.2
    )
    est.fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_ == len(est.loss_curve_)
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert 0 <= est.best_validation_score_ <= 1
    assert clone(ESTIMATORS["semiparametric"]).fit(X, y).validation_scores_ is None


def test_early_stopping_with_a_class_too_small_to_stratify(blobs):
    X, y = blobs
    y = y.copy()
    y[0] = 3  # a class with a single row
    est = clone(ESTIMATORS["parametric"]).set_params(early_stopping=True, max_epochs=3).fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_


# ------------------------------------------------------------------------------- verbose
def test_verbose_two_prints_one_line_per_epoch(blobs, capsys):
    X, y = blobs
    clone(ESTIMATORS["parametric"]).set_params(verbose=2, max_epochs=3).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1: loss ")


def test_verbose_one_shows_a_progress_bar(blobs, capsys):
    X, y = blobs
    clone(ESTIMATORS["parametric"]).set_params(verbose=1, max_epochs=3).fit(X, y)
    err = capsys.readouterr().err
    assert "SemiparametricClassifier" in err and "loss" in err


def test_silent_by_default(blobs, capsys):
    X, y = blobs
    clone(ESTIMATORS["parametric"]).fit(X, y)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# --------------------------------------------------------------------------- outputs, labels
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_string_labels_and_probability_rows(name):
    est = ESTIMATORS[name]
    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    est = clone(est).fit(X, labels)
    np.testing.assert_array_equal(est.classes_, ["setosa", "versicolor", "virginica"])
    proba = est.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    pred = est.predict(X)
    assert set(pred) <= set(est.classes_) and isinstance(pred[0], str)
    np.testing.assert_array_equal(pred, est.classes_[proba.argmax(1)])


def test_unfitted_predict_raises_not_fitted():
    with pytest.raises(NotFittedError):
        clone(ESTIMATORS["semiparametric"]).predict(np.zeros((2, 3)))


def test_one_class_is_a_clear_error(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="only one class"):
        clone(ESTIMATORS["semiparametric"]).fit(X, np.zeros(len(X)))


def test_invalid_parameters_are_rejected(blobs):
    X, y = blobs
    for params, name in [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_epochs": -1}, "max_epochs"),
        ({"embedding": "rnn"}, "embedding"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"tau": float("nan")}, "tau"),
    ]:
        with pytest.raises(ValueError, match=f"'{name}' parameter"):
            clone(ESTIMATORS["semiparametric"]).set_params(**params).fit(X, y)
    for name in ("tau", "learning_rate", "weight_decay", "tol"):
        with pytest.raises(ValueError, match=f"The '{name}' parameter .* Got inf instead"):
            clone(ESTIMATORS["semiparametric"]).set_params(**{name: float("inf")}).fit(X, y)


# ------------------------------------------------------------------------------ persistence
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_pickle_round_trip_and_continued_training(name, blobs):
    est = ESTIMATORS[name]
    X, y = blobs
    a = clone(est).partial_fit(X, y, classes=np.unique(y))
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    # Continuing to train after unpickling gives what continuing without pickling gives.
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_pickled_state_is_on_cpu(blobs):
    X, y = blobs
    est = clone(ESTIMATORS["semiparametric"]).fit(X, y)
    state = est.__getstate__()
    assert state["device_"] == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in state["module_"].parameters())
    # torch.save / torch.load with weights_only=False also works (what users of torch do).
    buffer = io.BytesIO()
    torch.save(est, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
