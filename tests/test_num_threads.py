"""``num_threads``: "auto" (the default) runs small work on one thread and leaves big work alone; None
never touches torch's thread setting; an int holds during the call only. Whatever is set is restored.

Thread counts are observed from inside the network: every estimator is built with an embedding
factory whose module records ``torch.get_num_threads()`` at each forward pass.
"""

import numpy as np
import pytest
import torch
from sklearn.base import is_classifier
from torch import nn

from sksemiparam import SemiparametricClassifier, _base
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
    est = _make(name, recorder, num_threads=None)
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
        (1.5, TypeError, r"`num_threads` must be 'auto', a positive int or None, got 1.5 of type float"),
        ("2", TypeError, r"`num_threads` must be 'auto', a positive int or None, got '2' of type str"),
        (True, TypeError, r"`num_threads` must be 'auto', a positive int or None, got True of type bool"),
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


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", NAMES)
def test_auto_default_runs_small_work_on_one_thread(name):
    """The default: these tiny networks on 40 rows train and predict on one thread (two threads made
    a step of such a network 7x slower on a shared 2-core machine), and torch's setting is back
    afterwards, also after a failure."""
    torch.set_num_threads(2)
    recorder = _Recorder()
    est = _make(name, recorder)
    assert est.get_params()["num_threads"] == "auto"
    est.fit(X, _y(est))
    # Building the network probes it with two rows and counts its operations on one, under torch's
    # setting: "auto" decides from that count. Every pass after them runs on one thread.
    assert recorder.seen[:2] == [2, 2]
    assert recorder.seen[2:] and set(recorder.seen[2:]) == {1}
    recorder.seen.clear()
    _partial_fit(est)
    est.predict(X)
    assert recorder.seen and set(recorder.seen) == {1}
    assert torch.get_num_threads() == 2
    recorder.fail = True
    with pytest.raises(RuntimeError, match="failing on purpose"):
        est.fit(X, _y(est))
    assert torch.get_num_threads() == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", ["semiparametric", "nngk"])
def test_auto_leaves_big_work_alone(name, monkeypatch):
    """Above the threshold "auto" is None: torch.set_num_threads is never called."""
    monkeypatch.setattr(_base, "_SMALL_WORK_FLOPS", 0.0)
    torch.set_num_threads(2)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    recorder = _Recorder()
    est = _make(name, recorder)
    est.fit(X, _y(est))
    est.predict(X)
    assert calls == []
    assert set(recorder.seen) == {2}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_counts_operations_not_parameters():
    """A convolutional embedding has few parameters and much work per row: "auto" counts its
    operations (the paper's image network: ~3.7e7 FLOPs a 28x28 row), so a mini-batch of it is not
    small, while the same rows through a small MLP are."""
    rows = np.random.default_rng(0).random((8, 784), dtype=np.float32)
    labels = np.arange(8) % 2
    conv = SemiparametricClassifier(
        "parametric", embedding="conv", image_shape=(1, 28, 28), max_epochs=1, device="cpu", random_state=0
    ).fit(rows, labels)
    n_params = sum(p.numel() for p in conv.module_.parameters())
    assert conv._network_flops > 50 * n_params
    assert conv._auto_num_threads(8) is None
    mlp = SemiparametricClassifier("parametric", max_epochs=1, device="cpu", random_state=0).fit(rows, labels)
    assert mlp._auto_num_threads(8) == 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_counts_the_searched_memory():
    """A retrieval estimator compares each row with its stored examples: a large enough memory makes
    the same network's mini-batch big work, for training and prediction alike."""
    est = _make("nngk", _Recorder()).fit(X, Y_CLASS)
    assert est._compared_keys(0) == 40
    assert est._compared_keys(100) == 140  # a partial_fit of 100 new rows
    assert est._auto_num_threads() == 1  # predictions
    assert est._auto_num_threads(100) == 1
    assert est._auto_num_threads(100_000) is None
    # and the rule itself: rows x (network + 2 x key width x stored keys) against the threshold
    per_row = est._network_flops + 2 * est._embedding_out_dim(X.shape[1]) * (40 + 100_000)
    assert est.batch_size * per_row >= _base._SMALL_WORK_FLOPS
    small = est._network_flops + 2 * est._embedding_out_dim(X.shape[1]) * (40 + 100)
    assert est.batch_size * small < _base._SMALL_WORK_FLOPS
