"""``num_threads``: None never touches torch's thread setting; an int holds during the call only.

Thread counts are observed from inside the network: every estimator is built with an embedding
factory whose module records ``torch.get_num_threads()`` at each forward pass.
"""

import numpy as np
import pytest
import torch
from sklearn.base import is_classifier
from torch import nn

from tests._estimators import fast_estimators

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 4)).astype(np.float32)
Y_CLASS = np.arange(40) % 2
Y_REG = X[:, 0].astype(np.float64)

NAMES = ["semiparametric", "mbpa", "meta-neighborhoods-regressor", "nngk", "impostor"]


class _Recorder:
    """An embedding factory whose modules note torch's intra-op threads at every forward pass."""

    def __init__(self):
        self.seen = []
        self.fail = False

    def __call__(self, in_features, embedding_dim):
        recorder = self

        class Recording(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = nn.Linear(in_features, embedding_dim)

            def forward(self, x):
                recorder.seen.append(torch.get_num_threads())
                if recorder.fail:
                    raise RuntimeError("failing on purpose")
                return self.linear(x)

        return Recording()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _make(name, recorder, **params):
    return fast_estimators(name, embedding=recorder, max_epochs=2, random_state=0, device="cpu", **params)[
        name
    ]


def _y(est):
    return Y_CLASS if is_classifier(est) else Y_REG


def _partial_fit(est):
    kwargs = {"classes": [0, 1]} if is_classifier(est) else {}
    return est.partial_fit(X, _y(est), **kwargs)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", NAMES)
def test_none_never_calls_set_num_threads(name, monkeypatch):
    torch.set_num_threads(2)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    recorder = _Recorder()
    est = _make(name, recorder)
    assert est.get_params()["num_threads"] is None
    est.fit(X, _y(est))
    _partial_fit(est)
    est.predict(X)
    assert calls == []
    assert recorder.seen and set(recorder.seen) == {2}
    assert torch.get_num_threads() == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", NAMES)
def test_int_holds_during_the_call_and_is_restored(name):
    torch.set_num_threads(2)
    recorder = _Recorder()
    est = _make(name, recorder, num_threads=1)
    est.fit(X, _y(est))
    assert recorder.seen and set(recorder.seen) == {1}
    assert torch.get_num_threads() == 2
    recorder.seen.clear()
    _partial_fit(est)
    est.predict(X)
    est.score(X, _y(est))
    assert recorder.seen and set(recorder.seen) == {1}
    assert torch.get_num_threads() == 2
    # set_params between calls is honoured, in the other direction too
    torch.set_num_threads(1)
    recorder.seen.clear()
    est.set_params(num_threads=2).predict(X)
    assert set(recorder.seen) == {2}
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("name", ["semiparametric", "meta-neighborhoods-regressor"])
def test_int_is_restored_after_an_exception(name):
    torch.set_num_threads(2)
    recorder = _Recorder()
    est = _make(name, recorder, num_threads=1)
    recorder.fail = True
    with pytest.raises(RuntimeError, match="failing on purpose"):
        est.fit(X, _y(est))
    assert recorder.seen == [1]
    assert torch.get_num_threads() == 2
    recorder.fail = False
    est.fit(X, _y(est))
    recorder.fail = True
    with pytest.raises(RuntimeError, match="failing on purpose"):
        est.predict(X)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    "value, exc, pattern",
    [
        (0, ValueError, r"`num_threads`=0 must be at least 1"),
        (-2, ValueError, r"`num_threads`=-2 must be at least 1"),
        (1.5, TypeError, r"`num_threads` must be a positive int or None, got 1.5 of type float"),
        ("2", TypeError, r"`num_threads` must be a positive int or None, got '2' of type str"),
        (True, TypeError, r"`num_threads` must be a positive int or None, got True of type bool"),
    ],
)
def test_bad_values_raise(value, exc, pattern):
    torch.set_num_threads(2)
    est = fast_estimators("semiparametric", max_epochs=1, random_state=0, num_threads=value)["semiparametric"]
    with pytest.raises(exc, match=pattern):
        est.fit(X, Y_CLASS)
    assert not hasattr(est, "module_")
    # set after fitting, the value is checked by the next predict as well
    est.set_params(num_threads=None).fit(X, Y_CLASS)
    est.set_params(num_threads=value)
    with pytest.raises(exc, match=pattern):
        est.predict(X)
    assert torch.get_num_threads() == 2
