"""A prediction for a row does not depend on the other rows of its predict call (on the CPU, to
float64 rounding), and computing it in float64 changes it by no more than float32 noise."""

import threading

import numpy as np
import pytest
import torch
from sklearn.base import is_classifier
from torch import nn
from torch.func import functional_call, grad
from torch.nn import functional as F

import sksemiparam._base
from sksemiparam import SemiparametricClassifier
from sksemiparam._base import TorchEstimatorBase, _Float64Predictions
from tests._estimators import fast_estimators

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ESTIMATORS = fast_estimators(max_epochs=3, random_state=0, device="cpu")
# Measured here: a row alone and in a batch agree to <= 1.1e-14 (relative) for every estimator;
# in float32 they were up to 2e-5 apart. Regression outputs near 0 get the absolute tolerance.
RTOL, ATOL = 1e-12, 1e-13


def _methods(est):
    names = ("predict_proba", "predict", "transform") if is_classifier(est) else ("predict", "transform")
    return [getattr(est, name) for name in names if hasattr(est, name)]


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, _, y_train, _ = digits
    return {
        name: est.fit(X_train[:400], y_train[:400] if is_classifier(est) else y_train[:400] / 9.0)
        for name, est in ESTIMATORS.items()
    }


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_row_predicts_the_same_alone_as_in_any_batch(name, fitted, digits, monkeypatch):
    est, X = fitted[name], digits[1][:38]  # a row and 37 others
    order = np.random.default_rng(0).permutation(len(X))
    for method in _methods(est):
        full = method(X)
        for row in (0, 21, 37):
            np.testing.assert_allclose(method(X[row : row + 1]), full[row : row + 1], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(method(X[order]), full[order], rtol=RTOL, atol=ATOL)
        with monkeypatch.context() as patch:  # forward passes of 5, 5, ..., 3 rows
            patch.setattr(sksemiparam._base, "_PREDICT_CHUNK", 5)
            np.testing.assert_allclose(method(X), full, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_float64_predictions_are_within_float32_noise_of_float32_ones(name, fitted, digits, monkeypatch):
    est, X = fitted[name], digits[1]
    float64 = [method(X) for method in _methods(est)]
    monkeypatch.setattr(TorchEstimatorBase, "_inference_precision", lambda self: self._autocast())
    for method, expected in zip(_methods(est), float64):
        np.testing.assert_allclose(method(X), expected, rtol=1e-4, atol=1e-5)


def test_custom_embedding_with_layer_norm_and_in_place_ops_predicts_batch_invariantly(digits):
    class Net(nn.Module):  # float32 parameters and buffers meet float64 activations at predict time
        def __init__(self, n_in, dim):
            super().__init__()
            self.linear, self.norm = nn.Linear(n_in, dim), nn.LayerNorm(dim)

        def forward(self, x):
            out = torch.zeros(x.shape[0], self.norm.normalized_shape[0])
            out += self.norm(self.linear(x))
            return out.relu_()

    X_train, X_test, y_train, _ = digits
    clf = SemiparametricClassifier(embedding=Net, max_epochs=2, random_state=0, device="cpu")
    clf.fit(X_train[:300], y_train[:300])
    full = clf.predict_proba(X_test[:38])
    np.testing.assert_allclose(clf.predict_proba(X_test[5:6]), full[5:6], rtol=RTOL, atol=ATOL)


def test_float64_mode_widens_products_and_leaves_gradients_and_buffers_alone():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    head = nn.Linear(4, 3)
    theta = {n: p.detach() for n, p in head.named_parameters()}

    def loss(params):
        return functional_call(head, params, (x,)).square().sum()

    expected = grad(loss)(theta)
    seen = []
    with _Float64Predictions():
        assert F.linear(x, w).dtype == torch.float64
        assert (x @ w.T).dtype == torch.float64
        assert F.layer_norm(x @ w.T, (3,), torch.ones(3), torch.zeros(3)).dtype == torch.float64
        buffer = torch.zeros(5, 3)
        buffer += x @ w.T  # written into float32, as the code that made the buffer expects
        assert buffer.dtype == torch.float32
        activations = x @ w.T  # and into float64 from float32 (index_add_ wants one dtype)
        activations.index_add_(0, torch.tensor([0]), torch.ones(1, 3))
        assert activations.dtype == torch.float64
        got = grad(loss)(theta)  # autograd.grad differentiates w.r.t. the float32 parameters
        thread = threading.Thread(target=lambda: seen.append((x @ w.T).dtype))  # modes are per thread
        thread.start()
        thread.join()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    assert seen == [torch.float32]
