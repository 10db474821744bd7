"""ImpostorClassifier: eq. (9) with soft targets, eq. (13) against eq. (11), centre modes, PQ, add/drop."""

import numpy as np
import pytest
import torch

from sksemiparam import ImpostorClassifier
from sksemiparam._impostor import redistribute, redistribution_shares
from sksemiparam._pq import ProductQuantizer
from sksemiparam.nn import kernel_vote_log_proba
from sksemiparam.nn.nngk import VOTE_FLOOR

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"max_epochs": 5, "random_state": 0, "device": "cpu"}


def test_eq9_with_soft_targets_by_hand():
    # Two neighbours at squared distances 1 and 4, sigma = 1: kernels e^-0.5, e^-2.
    log_w = torch.tensor([[-0.5, -2.0]], dtype=torch.float64)
    targets = torch.tensor([[[0.8, 0.2], [0.0, 1.0]]], dtype=torch.float64)
    k = np.exp([-0.5, -2.0])
    p = (k[0] * np.array([0.8, 0.2]) + k[1] * np.array([0.0, 1.0])) / k.sum()
    expected = np.log((p + VOTE_FLOOR) / (1 + 2 * VOTE_FLOOR))
    np.testing.assert_allclose(kernel_vote_log_proba(log_w, targets, 2).numpy()[0], expected, rtol=1e-12)


def _gaussian(sq, sigma):
    return np.exp(-sq / (2 * sigma**2))


def test_eq13_matches_the_exact_change_of_eq11_for_small_epsilon():
    rng = np.random.default_rng(0)
    # Two well-separated clusters: a point's neighbourhood votes (almost) its own label.
    Z = np.vstack([rng.normal(0, 0.3, (6, 2)), rng.normal(4, 0.3, (6, 2))])
    Y = np.repeat(np.eye(2), 6, axis=0)
    z0, y0 = np.array([0.5, 0.2]), np.array([0.0, 1.0])  # a centre of class 1 inside cluster 0
    sigma, eps = 0.7, 1e-6

    def prediction(j, epsilon):  # eq. (11) at z_j, over every other centre (j excluded)
        others = [i for i in range(len(Z)) if i != j]
        k = _gaussian(((Z[others] - Z[j]) ** 2).sum(1), sigma)
        k0 = _gaussian(((z0 - Z[j]) ** 2).sum(), sigma)
        return ((Y[others] * k[:, None]).sum(0) + epsilon * y0 * k0) / (k.sum() + epsilon * k0)

    ids, shares = redistribution_shares(
        torch.tensor(z0[None]), torch.tensor(Z), sigma=sigma, n_neighbors=len(Z)
    )
    r = np.zeros(len(Z))
    r[ids.numpy()[0]] = shares.numpy()[0]
    for j in range(6):  # the cluster the new centre lands in
        exact = (prediction(j, eps) - prediction(j, 0.0)) / eps  # eq. (10) by finite difference
        others = [i for i in range(len(Z)) if i != j]
        k = _gaussian(((Z[others] - Z[j]) ** 2).sum(1), sigma)
        k0 = _gaussian(((z0 - Z[j]) ** 2).sum(), sigma)
        eq12 = (y0 * k0 * k.sum() - k0 * (Y[others] * k[:, None]).sum(0)) / k.sum() ** 2
        np.testing.assert_allclose(exact, eq12, rtol=1e-4, atol=1e-9)
        eq13 = r[j] * (y0 - Y[j])  # the implementation's weights
        np.testing.assert_allclose(eq13, eq12, rtol=0.05, atol=1e-3)


def test_redistribution_moves_neighbour_targets_and_stays_a_distribution():
    targets = torch.eye(2)[[0, 0, 1]]
    ids = torch.tensor([[0, 1]])
    shares = torch.tensor([[0.5, 0.1]])
    dropped_target = torch.tensor([[0.0, 1.0]])
    after_drop = redistribute(targets, ids, shares, dropped_target, +1.0)
    np.testing.assert_allclose(after_drop.numpy(), [[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]], atol=1e-6)
    after_add = redistribute(targets, ids, shares, dropped_target, -1.0)  # pushed away, clipped at 0
    np.testing.assert_allclose(after_add.sum(1).numpy(), 1.0, atol=1e-6)
    assert (after_add >= 0).all()


def test_product_quantizer_memory_and_reconstruction():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(200, 16)).astype(np.float32)
    pq = ProductQuantizer(4).fit(small)  # 200 vectors <= 256 codewords: each is its own codeword
    codes = pq.encode(small)
    assert codes.dtype == np.uint8 and codes.shape == (200, 4)
    np.testing.assert_allclose(pq.decode(codes), small, atol=1e-5)
    X = (rng.normal(size=(1000, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)
    errors = {}
    for m in (2, 4, 8):
        pq = ProductQuantizer(m).fit(X)
        errors[m] = np.mean(((pq.decode(pq.encode(X)) - X) ** 2).sum(1)) / np.mean((X**2).sum(1))
        assert pq.codebook_nbytes == m * 256 * (16 // m) * 4
    assert errors[8] < errors[4] < errors[2] < 0.5
    opq = ProductQuantizer(4, rotation=True, n_rotation_iter=3).fit(X)
    np.testing.assert_allclose(opq.rotation_ @ opq.rotation_.T, np.eye(16), atol=1e-4)
    opq_error = np.mean(((opq.decode(opq.encode(X)) - X) ** 2).sum(1)) / np.mean((X**2).sum(1))
    assert opq_error < 0.5
    with pytest.raises(ValueError, match="not divisible by n_subspaces=5"):
        ProductQuantizer(5).fit(X)


def test_quantised_prediction_scores_the_reconstructed_centres(digits):
    X_train, X_test, y_train, _ = digits
    clf = ImpostorClassifier(n_neighbors=32, quantize="pq", pq_subspaces=8, **FAST).fit(X_train, y_train)
    assert clf.bytes_per_center_ == 8 and clf.codes_.shape == (X_train.shape[0], 8)
    with torch.no_grad():
        z = clf.module_(torch.from_numpy(X_test[:20]))
        decoded = torch.from_numpy(clf.quantizer_.decode(clf.codes_))
        sq = torch.cdist(z.double(), decoded.double()) ** 2
        near, ids = sq.topk(clf.n_neighbors, largest=False)
        log_w = -near / (2 * clf.module_.sigma.double() ** 2)
        expected = kernel_vote_log_proba(log_w, clf.center_targets_.double()[ids], 10).exp().numpy()
    np.testing.assert_allclose(clf.predict_proba(X_test[:20]), expected, atol=1e-4)
    unquantised = ImpostorClassifier(**FAST).fit(X_train, y_train)
    assert unquantised.bytes_per_center_ == 4 * 64
    with pytest.raises(ValueError, match=r"`pq_subspaces`=7 does not divide the embedding dimension 64"):
        ImpostorClassifier(quantize="pq", pq_subspaces=7, **FAST).fit(X_train, y_train)


def test_centre_modes(digits):
    X_train, X_test, y_train, y_test = digits
    loose = ImpostorClassifier(centers="loose", center_reg=0.0, **FAST).fit(X_train, y_train)
    with torch.no_grad():
        embedded = loose.module_(torch.from_numpy(X_train))
    free_gap = (loose.module_.centers - embedded).square().sum(1).mean().item()
    assert free_gap > 0  # the impostors moved away from the examples
    tight = ImpostorClassifier(centers="loose", center_reg=100.0, **FAST).fit(X_train, y_train)
    with torch.no_grad():
        tight_gap = (tight.module_.centers - tight.module_(torch.from_numpy(X_train))).square().sum(1).mean()
    assert tight_gap.item() < free_gap  # eq. (8)'s penalty ties them
    fixed = ImpostorClassifier(centers="fixed", **FAST).fit(X_train, y_train)
    with torch.no_grad():
        initial = fixed.module_.initial_embedding.eval()(torch.from_numpy(X_train))
    np.testing.assert_allclose(fixed.index_.keys.numpy(), initial.numpy(), rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in fixed.module_.initial_embedding.parameters())
    tied = ImpostorClassifier(centers="tied", **FAST).fit(X_train, y_train)
    with torch.no_grad():
        np.testing.assert_allclose(
            tied.index_.keys.numpy(), tied.module_(torch.from_numpy(X_train)).numpy(), rtol=1e-5, atol=1e-6
        )
    for clf in (loose, tight, fixed, tied):
        assert clf.score(X_test, y_test) > 0.8


def test_partial_fit_adds_the_worst_and_drops_the_best(digits):
    X_train, _, y_train, _ = digits
    old, new = y_train < 5, y_train >= 5
    clf = ImpostorClassifier(n_add=30, n_drop=10, **FAST)
    clf.partial_fit(X_train[old][:200], y_train[old][:200], classes=np.arange(10))
    assert clf.centers_X_.shape[0] == 200  # the first call stores every row
    clf.partial_fit(X_train[new][:100], y_train[new][:100])
    assert clf.centers_X_.shape[0] == 200 + 30 - 10
    assert clf.module_.centers.shape[0] == clf.center_targets_.shape[0] == len(clf.index_) == 220
    stored_new = clf.centers_y_.numpy() >= 5
    assert stored_new.sum() == 30  # the added rows are of the new slice
    assert (clf.center_targets_.max(1).values < 1).any()  # redistribution moved soft targets
    np.testing.assert_allclose(clf.center_targets_.sum(1).numpy(), 1.0, atol=1e-5)
    capped = ImpostorClassifier(n_add=30, max_centers=150, redistribute=False, **FAST)
    capped.partial_fit(X_train[old][:200], y_train[old][:200], classes=np.arange(10))
    capped.partial_fit(X_train[new][:100], y_train[new][:100])
    assert capped.centers_X_.shape[0] == 150
    targets = capped.center_targets_.numpy()
    np.testing.assert_array_equal(targets, np.eye(10)[capped.centers_y_.numpy()])  # untouched
    plain = ImpostorClassifier(**FAST)  # n_add=None: every new example is a centre, as NNGK
    plain.partial_fit(X_train[:100], y_train[:100], classes=np.arange(10))
    plain.partial_fit(X_train[100:150], y_train[100:150])
    assert plain.centers_X_.shape[0] == 150


@pytest.mark.parametrize("centers", ["loose", "tied", "fixed"])
def test_sampled_candidates_train_every_centre_mode_and_the_continual_step(centers, digits):
    # With `candidates`, a step votes over centres drawn at random: loose centres (parameters) get
    # gradients only where drawn, tied ones are embedded with the batch, fixed ones are constants.
    X_train, X_test, y_train, y_test = digits
    clf = ImpostorClassifier(centers=centers, candidates=128, **FAST).fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.8
    old, new = y_train < 5, y_train >= 5
    clf = ImpostorClassifier(centers=centers, candidates=32, n_add=30, n_drop=10, **FAST)
    clf.partial_fit(X_train[old][:200], y_train[old][:200], classes=np.arange(10))
    clf.partial_fit(X_train[new][:100], y_train[new][:100])
    assert clf.centers_X_.shape[0] == len(clf.index_) == 200 + 30 - 10
    assert (clf.centers_y_.numpy() >= 5).sum() == 30


def test_compress_requantises_without_training(digits):
    X_train, X_test, y_train, y_test = digits
    clf = ImpostorClassifier(**FAST).fit(X_train, y_train)
    full = clf.predict_proba(X_test)
    clf.set_params(quantize="pq", pq_subspaces=16).compress()
    assert clf.bytes_per_center_ == 16 and clf.score(X_test, y_test) > 0.8
    clf.set_params(quantize=None).compress()
    np.testing.assert_array_equal(clf.predict_proba(X_test), full)
    with pytest.raises(ValueError, match="does not divide"):
        clf.set_params(quantize="pq", pq_subspaces=5).compress()


def test_a_second_pass_over_a_slice_adds_no_duplicate_centres(digits):
    X_train, _, y_train, _ = digits
    clf = ImpostorClassifier(n_add=500, **FAST)
    clf.partial_fit(X_train[:100], y_train[:100], classes=np.arange(10))
    clf.partial_fit(X_train[:150], y_train[:150])  # 100 stored already: only 50 are new
    assert clf.centers_X_.shape[0] == 150
    assert len({row.tobytes() for row in clf.centers_X_.numpy()}) == 150


def test_the_centre_penalty_anchors_earlier_examples_during_partial_fit(digits):
    """Eq. (8) sums over all N centres: in partial_fit it draws stored centres, not only new rows."""
    X_train, X_test, y_train, y_test = digits
    old, new = y_train < 5, y_train >= 5
    scores = {}
    for reg in (0.0, 1.0):
        clf = ImpostorClassifier(n_add=50, center_reg=reg, embedding_dim=32, **FAST)
        clf.partial_fit(X_train[old], y_train[old], classes=np.arange(10))
        for _ in range(3):
            clf.partial_fit(X_train[old], y_train[old])
        for _ in range(5):
            clf.partial_fit(X_train[new], y_train[new])
        scores[reg] = clf.score(X_test[y_test < 5], y_test[y_test < 5])
    assert scores[1.0] > scores[0.0] + 0.1


def _continual_model(digits, **params):
    X_train, _, y_train, _ = digits
    clf = ImpostorClassifier(n_add=20, n_drop=5, **{**FAST, **params})
    return clf.partial_fit(X_train[:150], y_train[:150], classes=np.arange(10))


def test_a_continual_partial_fit_is_one_call_of_finetune_epochs_plus_one_epochs(digits):
    X_train, _, y_train, _ = digits
    clf = _continual_model(digits, finetune_epochs=3)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 1  # the first call: one epoch, as NNGK
    clf.partial_fit(X_train[150:250], y_train[150:250])
    assert clf.n_iter_ == 1 + 1 + 3 and len(clf.loss_curve_) == clf.n_iter_  # train pass + fine-tuning
    assert clf.centers_X_.shape[0] == 150 + 20 - 5
    clf.set_params(finetune_epochs=0).partial_fit(X_train[250:300], y_train[250:300])
    assert clf.n_iter_ == 6 and clf.centers_X_.shape[0] == 165 + 20 - 5  # add/drop without fine-tuning


def test_a_failure_in_the_finetune_pass_leaves_the_model_as_it_was(digits, monkeypatch):
    X_train, X_test, y_train, _ = digits
    clf = _continual_model(digits, finetune_epochs=2)
    before = {
        "proba": clf.predict_proba(X_test),
        "centers": clf.centers_X_.clone(),
        "targets": clf.center_targets_.clone(),
        "params": {n: p.detach().clone() for n, p in clf.module_.named_parameters()},
        "n_iter_": clf.n_iter_,
        "loss_curve_": list(clf.loss_curve_),
        "index": len(clf.index_),
    }
    loss, epochs_seen = ImpostorClassifier._loss, []

    def failing_loss(self, X, y, ids):
        if self.n_iter_ > before["n_iter_"]:  # epoch 0 and the add/drop step are done: fine-tuning
            epochs_seen.append(self.n_iter_)
            raise RuntimeError("injected failure in the fine-tune pass")
        return loss(self, X, y, ids)

    monkeypatch.setattr(ImpostorClassifier, "_loss", failing_loss)
    with pytest.raises(RuntimeError, match="injected failure in the fine-tune pass"):
        clf.partial_fit(X_train[150:250], y_train[150:250])
    assert epochs_seen == [before["n_iter_"] + 1]  # it did fail after the add/drop step
    monkeypatch.undo()
    np.testing.assert_array_equal(clf.predict_proba(X_test), before["proba"])
    assert torch.equal(clf.centers_X_, before["centers"]) and torch.equal(
        clf.center_targets_, before["targets"]
    )
    for name, value in clf.module_.named_parameters():
        assert torch.equal(value, before["params"][name]), name
    assert clf.n_iter_ == before["n_iter_"] and clf.loss_curve_ == before["loss_curve_"]
    assert len(clf.index_) == len(clf.memory_) == before["index"]
    clf.partial_fit(X_train[150:250], y_train[150:250])  # and it trains on as if nothing happened
    assert clf.centers_X_.shape[0] == 150 + 20 - 5
