"""Persistence: pickle, joblib and the pickle-free safetensors format, for every estimator.

A round trip gives identical predictions, fitted and midway through partial_fit, and training on
after loading gives what training on without saving gives. Files written by a newer version are a
clear error, and the safe format cannot be made to create anything but the library's own objects.
Models saved before the stored examples moved into ExampleMemory (0.1.0.dev0) still load.
"""

import io
import json
import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.base import clone, is_classifier

from sksemiparam import SemiparametricClassifier
from sksemiparam.persistence import load, save
from tests._estimators import fast_estimators

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"max_epochs": 3, "batch_size": 16, "random_state": 0, "device": "cpu"}
ESTIMATORS = fast_estimators(
    "semiparametric",
    "parametric",
    "mbpa",
    "meta-neighborhoods-classifier",
    "meta-neighborhoods-regressor",
    "nngk",
    "impostor",
    "impostor-pq",
    **FAST,
)

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 8)).astype(np.float32)
X_more = rng.normal(size=(32, 8)).astype(np.float32)
LABELS = np.array(["ant", "bee", "cat"])


def _y(est, n):
    return LABELS[np.arange(n) % 3] if is_classifier(est) else rng.normal(size=n)


def _outputs(est, X_):
    return est.predict_proba(X_) if is_classifier(est) else est.predict(X_)


def _pickle(est):
    return pickle.loads(pickle.dumps(est))


def _joblib(est):
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def _safe(est, tmp_path):
    path = tmp_path / "model.safetensors"
    save(est, path)
    return load(path)


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("how", ["pickle", "joblib", "safetensors"])
def test_round_trip_fitted_and_midway_through_partial_fit(name, how, tmp_path):
    est = ESTIMATORS[name]
    copy = {"pickle": _pickle, "joblib": _joblib, "safetensors": lambda e: _safe(e, tmp_path)}[how]
    y, y_more = _y(est, 64), _y(est, 32)
    fitted = clone(est).fit(X, y)
    loaded = copy(fitted)
    assert type(loaded) is type(fitted)
    np.testing.assert_array_equal(_outputs(loaded, X), _outputs(fitted, X))
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert loaded.get_params() == fitted.get_params()

    kwargs = {"classes": LABELS} if is_classifier(est) else {}
    model = clone(est).partial_fit(X, y, **kwargs)
    loaded = copy(model)
    np.testing.assert_array_equal(_outputs(loaded, X), _outputs(model, X))
    # Training on after loading gives exactly what training on without saving gives.
    for m in (model, loaded):
        m.partial_fit(X_more, y_more)
        m.partial_fit(X, y)
    np.testing.assert_array_equal(_outputs(loaded, X), _outputs(model, X))
    assert loaded.n_iter_ == model.n_iter_


def test_safe_format_holds_no_pickle_and_loads_without_touching_the_global_rng(tmp_path):
    est = clone(ESTIMATORS["semiparametric"]).fit(X, _y(ESTIMATORS["semiparametric"], 64))
    path = tmp_path / "m.safetensors"
    save(est, path)
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["sksemiparam"])
        assert all(f.get_tensor(k).dtype != torch.uint8 or "generator" in k for k in f.keys())
    assert header["class"] == ["sksemiparam._semiparametric", "SemiparametricClassifier"]
    assert header["state"] and header["module"]
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    load(path)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_model_from_a_newer_version_is_a_clear_error(tmp_path):
    est = clone(ESTIMATORS["semiparametric"]).fit(X, _y(ESTIMATORS["semiparametric"], 64))
    state = est.__getstate__()
    state["_sksemiparam_version"] = "99.0"
    newer = pickle.dumps((type(est), state))
    cls, saved_state = pickle.loads(newer)
    blank = cls.__new__(cls)
    with pytest.raises(ValueError, match=r"saved by sksemiparam 99.0, newer than the installed .*upgrade"):
        blank.__setstate__(saved_state)

    path = tmp_path / "m.safetensors"
    save(est, path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["sksemiparam"])
    header["sksemiparam_version"] = "99.0"
    save_file(tensors, str(path), metadata={"sksemiparam": json.dumps(header)})
    with pytest.raises(ValueError, match=r"saved by sksemiparam 99.0, newer than the installed"):
        load(path)


def test_the_safe_format_creates_nothing_but_the_librarys_classes(tmp_path):
    est = clone(ESTIMATORS["semiparametric"]).fit(X, _y(ESTIMATORS["semiparametric"], 64))
    path = tmp_path / "m.safetensors"
    save(est, path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["sksemiparam"])
    for forged in (["os", "system"], ["builtins", "eval"], ["sklearn.pipeline", "Pipeline"]):
        bad = dict(header, **{"class": forged})
        save_file(tensors, str(path), metadata={"sksemiparam": json.dumps(bad)})
        with pytest.raises(ValueError, match="refusing to create .*: not an sksemiparam class"):
            load(path)
    # A nested object can't name another class either.
    bad = json.loads(json.dumps(header))
    bad["state"]["__dict__"].append(["x_", {"__object__": ["subprocess", "Popen"], "state": None}])
    save_file(tensors, str(path), metadata={"sksemiparam": json.dumps(bad)})
    with pytest.raises(ValueError, match="refusing to create subprocess.Popen"):
        load(path)
    # Not our file at all.
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="is not an sksemiparam model file"):
        load(path)


def linear_embedding(n_features, embedding_dim):
    return torch.nn.Linear(n_features, embedding_dim)


def test_what_the_safe_format_cannot_store_is_a_clear_type_error(tmp_path):
    est = SemiparametricClassifier(embedding=linear_embedding, **FAST).fit(
        X, _y(ESTIMATORS["semiparametric"], 64)
    )
    with pytest.raises(TypeError, match="use pickle or joblib for models built from your own code"):
        save(est, tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="save\\(\\) stores sksemiparam estimators"):
        save(object(), tmp_path / "m.safetensors")
    # pickle still works for it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(_pickle(est).predict(X), est.predict(X))


LEGACY = Path(__file__).parent / "data" / "legacy"


def test_the_0_1_models_are_there():  # an empty glob would parametrise the test below away
    assert len(list(LEGACY.glob("*.pkl"))) == len(list(LEGACY.glob("*.safetensors"))) == 9


@pytest.mark.parametrize("how", ["pickle", "safetensors"])
@pytest.mark.parametrize("name", sorted(path.stem for path in LEGACY.glob("*.pkl")))
def test_models_saved_by_0_1_load_predict_as_before_and_train_on(name, how):
    """tests/data/legacy: each roster configuration fitted on iris by sksemiparam 0.1.0.dev0
    (commit 9257c74, before the stored examples moved into ExampleMemory), then given two
    partial_fit calls, the second over rows already stored; with its predictions on ``probe``."""
    saved = np.load(LEGACY / "outputs.npz")
    if how == "pickle":
        with open(LEGACY / f"{name}.pkl", "rb") as f:
            model = pickle.load(f)
    else:
        model = load(LEGACY / f"{name}.safetensors")
    probe = saved["probe"]
    # 0.1 predicted in float32; predictions on the CPU now compute in float64 (batch invariance):
    # the same model, within float32 rounding (which can swap a near-tie at the k-th neighbour:
    # the nonparametric model's 3e-6 for a class became its 1e-12 floor).
    np.testing.assert_allclose(_outputs(model, probe), saved[name], rtol=1e-5, atol=1e-5)
    for attribute in ("memory_X_", "memory_y_", "centers_X_", "centers_y_"):
        assert attribute not in vars(model)  # converted, not left beside the new memory
    y = model.predict(probe)
    model.partial_fit(probe, y)  # rows the memory does not hold: stored, and trained on
    assert np.isfinite(_outputs(model, probe)).all()
