"""Mixed precision (``precision="bf16"`` / ``"fp16"``): every estimator trains and predicts in it on the CPU,
outputs and stored keys stay float32, and the CUDA-only checks are exercised by faking CUDA."""

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier

from sksemiparam import SemiparametricClassifier
from sksemiparam._base import check_precision
from sksemiparam.nn import pairwise_sq_distances
from tests._estimators import fast_estimators

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"max_epochs": 3, "batch_size": 32, "random_state": 0, "device": "cpu"}
ESTIMATORS = fast_estimators(**FAST)


def _floating_state(est):
    """Every floating fitted tensor an estimator stores outside its network: memories, centres,
    neighbour-index keys, targets."""
    found = {}
    for name, value in vars(est).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            found[name] = value
    index = getattr(est, "index_", None)
    if index is not None and len(index):
        found["index_.keys"] = index.keys
    memory = getattr(est, "memory_", None)
    if memory is not None and len(memory):
        for part in ("X", "keys"):  # inputs (stored rows) or keys (MbPA's embeddings)
            if getattr(memory, part) is not None:
                found[f"memory_.{part}"] = getattr(memory, part)
    return found


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_bf16_fits_and_predicts_with_float32_outputs_and_keys(name, blobs):
    X, y = blobs
    est = clone(ESTIMATORS[name]).set_params(precision="bf16")
    target = y.astype(np.float64) if not is_classifier(est) else y
    est.fit(X, target)
    dtypes = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        for m in est.module_.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    try:
        pred = est.predict(X)
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.bfloat16 in dtypes  # the network's layers really ran under autocast
    assert np.isfinite(pred).all()
    if is_classifier(est):
        proba = est.predict_proba(X)
        assert proba.dtype == np.float64 and np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
        assert (pred == y).mean() > 0.6  # blobs: bf16 still learns
    assert np.isfinite(est.loss_curve_).all()
    state = _floating_state(est)
    assert {n: t.dtype for n, t in state.items() if t.dtype != torch.float32} == {}
    assert all(p.dtype == torch.float32 for p in est.module_.parameters())  # autocast, not a cast


def test_bf16_trains_through_autocast(blobs):
    X, y = blobs
    est = SemiparametricClassifier(**{**FAST, "max_epochs": 1}, precision="bf16")
    seen = []
    original = SemiparametricClassifier._loss

    def spy(self, X_, y_, ids):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return original(self, X_, y_, ids)

    SemiparametricClassifier._loss = spy
    try:
        est.fit(X, y)
    finally:
        SemiparametricClassifier._loss = original
    assert seen and all(seen)


def test_bf16_accuracy_close_to_float32_on_digits(digits):
    # Measured here (max_epochs=20, seed 0, 540 test rows): float32 0.9370, bf16 0.9370 (loss curves
    # differ from the 4th digit on); NNGKClassifier 0.9870 and 0.9870 (fp16 0.9852).
    X_train, X_test, y_train, y_test = digits
    params = {"max_epochs": 20, "random_state": 0, "device": "cpu"}
    full = SemiparametricClassifier(**params).fit(X_train, y_train).score(X_test, y_test)
    half = SemiparametricClassifier(**params, precision="bf16").fit(X_train, y_train).score(X_test, y_test)
    assert full > 0.9
    assert abs(full - half) <= 0.02


def test_fp16_on_cpu_trains_with_loss_scaling(blobs):
    X, y = blobs
    est = SemiparametricClassifier(**FAST, precision="fp16").fit(X, y)
    assert est._grad_scaler_state["scale"] > 0  # a GradScaler ran and its state carries to the next call
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert (est.predict(X) == y).mean() > 0.6
    est.partial_fit(X, y)
    assert np.isfinite(est.loss_curve_).all()


def test_precision_can_change_between_fit_and_predict(blobs):
    X, y = blobs
    est = SemiparametricClassifier(**FAST).fit(X, y)
    full = est.predict_proba(X)
    half = est.set_params(precision="bf16").predict_proba(X)
    np.testing.assert_allclose(half, full, atol=0.05)
    np.testing.assert_array_equal(est.set_params(precision="float32").predict_proba(X), full)


@pytest.mark.parametrize("bad", ["float16", "half", "fp8", None, 16])
def test_invalid_precision_is_an_error(bad, blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="'precision' parameter"):
        SemiparametricClassifier(**FAST, precision=bad).fit(X, y)
    with pytest.raises(ValueError, match=r"`precision`="):
        check_precision(bad, torch.device("cpu"))


def test_bf16_on_cuda_without_bf16_support_is_a_clear_error(blobs, monkeypatch):
    X, y = blobs
    fitted = SemiparametricClassifier(**FAST).fit(X, y)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    message = r"`precision`='bf16' was requested on `device`='cuda', which has no bfloat16 support"
    # Raised before anything moves to the (absent) GPU.
    with pytest.raises(ValueError, match=message):
        SemiparametricClassifier(**{**FAST, "device": "auto"}, precision="bf16").fit(X, y)
    with pytest.raises(ValueError, match=message):
        fitted.set_params(device="auto", precision="bf16").predict(X)
    assert fitted.device_ == torch.device("cpu")
    check_precision("fp16", torch.device("cuda"))  # every CUDA GPU has float16
    check_precision("float32", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    check_precision("bf16", torch.device("cuda:0"))


def test_distances_stay_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 16, generator=g) + 10.0  # far from the origin: a.b cancels in bfloat16
    b = a + 1e-2 * torch.randn(50, 16, generator=g)
    exact = pairwise_sq_distances(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = pairwise_sq_distances(a.bfloat16(), b)
    assert mixed.dtype == torch.float32
    np.testing.assert_allclose(
        mixed.numpy(), pairwise_sq_distances(a.bfloat16().float(), b).numpy(), rtol=1e-5, atol=1e-4
    )
    assert exact.dtype == torch.float32
