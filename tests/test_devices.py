"""Device handling on a machine without a GPU (the rest is in test_base.py): a model fitted on the CPU keeps
predicting after a device change, pickling and the safetensors format, and "auto" picks CUDA when it exists,
checked by faking CUDA without moving any tensor to it."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sksemiparam import SemiparametricClassifier
from sksemiparam._base import resolve_device
from sksemiparam.persistence import load, save
from tests._estimators import fast_estimators

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ESTIMATORS = fast_estimators("semiparametric", "mbpa", "nngk", max_epochs=2, random_state=0, device="auto")


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_fitted_on_cpu_predicts_after_device_change_pickle_and_save(name, blobs, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    X, y = blobs
    est = clone(ESTIMATORS[name]).fit(X, y)
    assert est.device_ == torch.device("cpu")  # "auto" without CUDA
    expected = est.predict_proba(X)
    np.testing.assert_array_equal(est.set_params(device="cpu").predict_proba(X), expected)
    unpickled = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(unpickled.set_params(device="cpu").predict_proba(X), expected)
    save(est, tmp_path / "model.safetensors")
    loaded = load(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(loaded.set_params(device="auto").predict_proba(X), expected)
    with pytest.raises(ValueError, match="CUDA is not available"):
        loaded.set_params(device="cuda").predict(X)


def test_auto_resolves_to_cuda_at_fit_when_cuda_is_present(blobs, monkeypatch):
    X, y = blobs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    chosen = []

    def stop_before_moving(self, X_, y_enc, n_outputs, *, first_pass, incremental, device):
        chosen.append(device)
        raise RuntimeError("stop before any tensor moves")

    monkeypatch.setattr(SemiparametricClassifier, "_start_training", stop_before_moving)
    est = SemiparametricClassifier(max_epochs=1, device="auto")
    with pytest.raises(RuntimeError, match="stop before"):
        est.fit(X, y)
    assert chosen == [torch.device("cuda")]
    assert not hasattr(est, "module_")  # the failed fit left it unfitted
