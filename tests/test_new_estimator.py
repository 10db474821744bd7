"""A sixth estimator in one file, proven: the walk-through of docs/contributing.md.

``SoftKNNClassifier`` is defined here and nowhere else: a soft k-nearest-neighbour classifier over
a learned embedding (the family of NNGK and ModernNCA). Every training row is stored; a query's
class distribution is the softmax-weighted vote of its k nearest stored embeddings,
p(c | x) = sum_i softmax_i(-||f(x) - f(x_i)||^2 / temperature) 1(y_i = c), trained end to end with
the cross-entropy of that vote (a row never votes for itself). It fills in a few hooks of
``TorchClassifierBase`` and takes its memory, neighbour search and retrieval parameters from
``RetrievalMixin``; then scikit-learn's checks, ``partial_fit``, persistence and the bad-input tests
run on it with no change anywhere else in the library or the tests.
"""

import copy
import math
from numbers import Real

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.utils._param_validation import Interval
from sklearn.utils.estimator_checks import parametrize_with_checks

import tests.test_bad_input as bad_input
import tests.test_persistence as persistence_tests
from sksemiparam._base import TorchClassifierBase
from sksemiparam._memory import RetrievalMixin
from sksemiparam.persistence import load, save


class SoftKNNClassifier(RetrievalMixin, TorchClassifierBase):
    """Soft k-nearest-neighbour vote over a learned embedding.

    Parameters
    ----------
    temperature : float, default=1.0
        Width of the vote: neighbour i weighs softmax_i(-||z - z_i||^2 / temperature).
    .. shared:: n_neighbors index index_params image_shape max_epochs learning_rate weight_decay
    .. shared:: early_stopping validation_fraction n_iter_no_change tol warm_start ewc_lambda device
    .. shared:: num_threads precision random_state verbose
    """

    _parameter_constraints = {"temperature": [Interval(Real, 0, None, closed="neither")]}
    _embedding_final_activation = False  # the stored embeddings live in an unconstrained space

    def __init__(
        self,
        *,
        temperature=1.0,
        n_neighbors="auto",
        index="auto",
        index_params=None,
        embedding="mlp",
        hidden_layer_sizes=(32,),
        embedding_dim=16,
        image_shape=None,
        max_epochs=100,
        batch_size=100,
        learning_rate=1e-3,
        weight_decay=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        warm_start=False,
        ewc_lambda=0.0,
        device="auto",
        num_threads="auto",
        precision="float32",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            embedding=embedding,
            hidden_layer_sizes=hidden_layer_sizes,
            embedding_dim=embedding_dim,
            image_shape=image_shape,
            max_epochs=max_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            warm_start=warm_start,
            ewc_lambda=ewc_lambda,
            device=device,
            num_threads=num_threads,
            precision=precision,
            random_state=random_state,
            verbose=verbose,
        )
        self.temperature = temperature
        self.n_neighbors = n_neighbors
        self.index = index
        self.index_params = index_params

    # The hooks: the network, what an epoch stores, the loss, the prediction.
    def _build_module(self, n_features, n_outputs):
        self.memory_ = self._new_memory(self.device_)
        return torch.nn.ModuleDict({"embedding": self._make_embedding(n_features)})

    def _before_epoch(self, X, y, epoch):
        if epoch == 0:  # fit stores its rows anew; partial_fit adds those not stored yet
            self._own_entry = torch.from_numpy(self._remember(X, y, replace=not self._incremental))
        self._index_memory()  # the stored embeddings under this epoch's network

    def _loss(self, X, y, ids):
        z = self.module_.embedding(X)
        return F.nll_loss(self._log_proba(z, exclude=self._own_entry.to(ids.device)[ids]), y)

    def _forward(self, X):
        return self._log_proba(self.module_.embedding(X))

    def _before_validation(self, X, y):
        self._index_memory()

    def _on_train_end(self, X, y, *, incremental):
        self._index_memory()

    def _index_memory(self):
        self.index_ = self._new_index(0).build(self._embed_rows(self.memory_.X))

    def _log_proba(self, z, exclude=None):
        n_classes = len(self.classes_)
        available = len(self.memory_) - (exclude is not None)
        if available < 1:  # a single stored row cannot vote for itself
            return torch.full((z.shape[0], n_classes), -math.log(n_classes), device=z.device)
        with torch.no_grad():  # search without gradients, re-score the retrieved keys with them
            _, ids = self.index_.query(z.detach(), self._n_neighbors(available), exclude=exclude)
        sq_dist = (z[:, None, :] - self.index_.keys[ids]).square().sum(-1)
        weights = torch.softmax(-sq_dist / self.temperature, dim=1)
        votes = torch.einsum("nk,nkc->nc", weights, F.one_hot(self.memory_.y[ids], n_classes).to(z.dtype))
        return torch.log(votes.clamp_min(1e-12))


# ConvergenceWarning, and the warnings two bad inputs raise on the way to their errors.
pytestmark = bad_input.pytestmark

FAST = {"max_epochs": 20, "random_state": 0, "device": "cpu"}


@parametrize_with_checks([SoftKNNClassifier(**FAST), SoftKNNClassifier(n_neighbors=None, **FAST)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_it_learns_and_keeps_learning_with_partial_fit(digits):
    X_train, X_test, y_train, y_test = digits
    clf = SoftKNNClassifier(n_neighbors=8, **FAST).fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.9
    assert len(clf.memory_) == len(clf.index_) == len(X_train)
    stream = SoftKNNClassifier(n_neighbors=8, **FAST)
    for _ in range(3):  # passes over the same rows store them once
        for start in range(0, len(X_train), 200):
            rows = slice(start, start + 200)
            stream.partial_fit(X_train[rows], y_train[rows], classes=np.arange(10))
    assert len(stream.memory_) == len(X_train) and stream.n_iter_ == 3 * math.ceil(len(X_train) / 200)
    assert stream.score(X_test, y_test) > 0.85


def test_save_and_load_with_the_safe_format(digits, tmp_path):
    X_train, X_test, y_train, _ = digits
    clf = SoftKNNClassifier(**FAST).fit(X_train[:300], y_train[:300])
    save(clf, tmp_path / "soft-knn.safetensors")
    loaded = load(tmp_path / "soft-knn.safetensors")
    assert type(loaded) is SoftKNNClassifier
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))


# The library's own cross-estimator tests, run as they are on this estimator: each looks its
# estimator up by name in its module's ESTIMATORS, where this one is added for the test's duration.
BAD_INPUT_TESTS = [
    bad_input.test_bad_data_raises_a_clear_error_and_leaves_the_model_as_it_was,
    bad_input.test_predict_with_bad_data,
    bad_input.test_classifier_label_errors,
    bad_input.test_bad_n_neighbors,
    bad_input.test_non_finite_hyperparameters,
]


@pytest.mark.parametrize("test", BAD_INPUT_TESTS, ids=lambda t: t.__name__)
def test_the_bad_input_tests(test, monkeypatch):
    est = SoftKNNClassifier(n_neighbors=4, **bad_input.FAST)
    monkeypatch.setitem(bad_input.ESTIMATORS, "soft-knn", est)
    fitted = {"soft-knn": clone(est).fit(bad_input.X, bad_input._y(est, None))}
    if "fitted" in test.__code__.co_varnames[: test.__code__.co_argcount]:
        test("soft-knn", copy.deepcopy(fitted))
    else:
        test("soft-knn")


@pytest.mark.parametrize("how", ["pickle", "joblib", "safetensors"])
def test_the_persistence_round_trip_tests(how, monkeypatch, tmp_path):
    est = SoftKNNClassifier(n_neighbors=4, **persistence_tests.FAST)
    monkeypatch.setitem(persistence_tests.ESTIMATORS, "soft-knn", est)
    persistence_tests.test_round_trip_fitted_and_midway_through_partial_fit("soft-knn", how, tmp_path)
