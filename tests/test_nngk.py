"""NNGKClassifier: eq. (7) by hand, self-exclusion, refreshes, partial_fit, explain, the index backends."""

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sksemiparam import NNGKClassifier
from sksemiparam._index import NeighborIndex
from sksemiparam.nn import KernelVoteNet, kernel_vote_log_proba
from sksemiparam.nn.nngk import VOTE_FLOOR

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"max_epochs": 5, "random_state": 0, "device": "cpu"}


def test_eq7_on_a_hand_computed_example():
    net = KernelVoteNet(embedding=torch.nn.Identity(), n_classes=3, sigma=0.5).double()
    with torch.no_grad():
        net.log_sigma.fill_(math.log(0.5))  # exactly, not log(0.5) rounded to float32 and widened
    net.log_importance = torch.nn.Parameter(
        torch.log(torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64))
    )
    z = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    centers = torch.tensor([[1.0, 0.0], [0.0, 0.5], [1.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2])
    ids = torch.arange(4)
    # By hand: k_i = exp(-d_i^2 / (2 sigma^2)) = exp(-2 d_i^2), d^2 = 1, 0.25, 2, 9; w = 1, 2, 0.5, 1.
    vote = np.array([1 * math.exp(-2), 2 * math.exp(-0.5), 0.5 * math.exp(-4), 1 * math.exp(-18)])
    p = np.array([vote[0], vote[1] + vote[2], vote[3]]) / vote.sum()
    expected = np.log((p + VOTE_FLOOR) / (1 + 3 * VOTE_FLOOR))
    shared = net.log_proba(z, centers, ids, labels)  # the same centres for every query
    per_row = net.log_proba(z, centers[None], ids[None], labels[None])  # each query's own neighbours
    np.testing.assert_allclose(shared.detach().numpy()[0], expected, rtol=1e-12)
    np.testing.assert_allclose(per_row.detach().numpy()[0], expected, rtol=1e-12)
    # Excluding a centre (as a training row excludes its own) drops it from the vote.
    without = net.log_proba(z, centers, ids, labels, exclude=torch.tensor([1])).exp().detach().numpy()[0]
    q = np.array([vote[0], vote[2], vote[3]]) / (vote.sum() - vote[1])
    np.testing.assert_allclose(without, (q + VOTE_FLOOR) / (1 + 3 * VOTE_FLOOR), rtol=1e-10)


@pytest.mark.parametrize("soft", [False, True])
def test_shared_candidate_vote_equals_the_composed_eq7_with_its_gradients(soft):
    # log_proba over candidates shared by every query (sampled training, dense vote) runs a fused
    # Function with a hand-written backward: the same values and gradients (query, candidates,
    # importances, a learnable sigma) as eq. (5) and (7) composed, a fully masked row included.
    g = torch.Generator().manual_seed(6)
    net = KernelVoteNet(embedding=torch.nn.Identity(), n_classes=3, sigma=0.8, learn_sigma=True).double()
    net.log_importance = torch.nn.Parameter(0.3 * torch.randn(13, generator=g, dtype=torch.float64))
    z = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    centers = torch.randn(13, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.arange(13)
    ids[5] = -1  # an empty slot
    exclude = torch.tensor([0, 1, 2, 3, 4, -1, -1, 7, 8])
    labels = torch.randint(0, 3, (13,), generator=g)
    if soft:
        labels = torch.softmax(torch.randn(13, 3, generator=g, dtype=torch.float64), 1)
    weights = torch.randn(9, 3, generator=g, dtype=torch.float64)
    fused = net.log_proba(z, centers, ids, labels, exclude)
    masked = (ids < 0)[None, :] | (ids[None, :] == exclude[:, None])
    sq = ((z[:, None] - centers[None]) ** 2).sum(-1)
    log_w = -sq / (2 * net.sigma**2) + net.log_importance[ids.clamp_min(0)][None, :]
    composed = kernel_vote_log_proba(log_w.masked_fill(masked, float("-inf")), labels, 3)
    params = [z, centers, net.log_importance, net.log_sigma]
    np.testing.assert_allclose(fused.detach().numpy(), composed.detach().numpy(), rtol=1e-12, atol=1e-14)
    for a, b in zip(
        torch.autograd.grad((fused * weights).sum(), params),
        torch.autograd.grad((composed * weights).sum(), params),
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13)
    assert torch.autograd.gradcheck(lambda z, c: net.log_proba(z, c, ids, labels, exclude), (z, centers))
    # A query whose every candidate is masked gets the uniform distribution, and no gradient.
    nobody = net.log_proba(z[:1], centers, torch.full((13,), -1), labels)
    np.testing.assert_allclose(nobody.exp().detach().numpy(), [[1 / 3] * 3], rtol=1e-12)
    assert not torch.autograd.grad(nobody.sum(), z)[0].any()


def test_shared_candidate_vote_keeps_importances_and_targets_wide_under_autocast():
    # Under bfloat16 autocast the vote runs in float32: learned importances and soft targets are
    # not rounded to bfloat16 on the way in (z here is exact in bfloat16).
    g = torch.Generator().manual_seed(8)
    net = KernelVoteNet(embedding=torch.nn.Identity(), n_classes=3, sigma=1.0)
    net.log_importance = torch.nn.Parameter(torch.randn(11, generator=g) * 0.37)
    z = torch.randn(5, 4, generator=g).bfloat16().float()
    centers = torch.randn(11, 4, generator=g).bfloat16().float()
    labels = torch.softmax(torch.randn(11, 3, generator=g), 1)
    ids = torch.arange(11)
    plain = net.log_proba(z, centers, ids, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = net.log_proba(z.bfloat16(), centers, ids, labels)
    assert mixed.dtype == torch.float32
    np.testing.assert_allclose(mixed.detach().numpy(), plain.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_vote_is_finite_when_no_neighbour_has_the_class_and_underflow_safe():
    log_w = torch.tensor([[-1e4, -1e4 - 1.0]], requires_grad=True)  # exp underflows in float32
    log_p = kernel_vote_log_proba(log_w, torch.tensor([[0, 0]]), 3)
    assert torch.isfinite(log_p).all()
    np.testing.assert_allclose(log_p.exp().sum().item(), 1.0, rtol=1e-6)
    assert log_p[0, 0] > math.log(0.99)
    log_p[0, 1].backward()
    assert torch.isfinite(log_w.grad).all()
    # Every neighbour masked: uniform.
    masked = kernel_vote_log_proba(torch.full((1, 2), float("-inf")), torch.tensor([[0, 1]]), 4)
    np.testing.assert_allclose(masked.exp().numpy(), 0.25, rtol=1e-6)


def test_gradients_reach_the_query_sigma_importance_and_learnable_centres_only():
    net = KernelVoteNet(embedding=torch.nn.Identity(), n_classes=2, sigma=1.0, learn_sigma=True)
    net.log_importance = torch.nn.Parameter(torch.zeros(3))
    z = torch.tensor([[0.2, 0.1]], requires_grad=True)
    centers = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = -net.log_proba(z, centers, torch.arange(3), torch.tensor([0, 1, 1]))[0, 0]
    loss.backward()
    assert z.grad.abs().sum() > 0 and net.log_sigma.grad.abs() > 0 and net.log_importance.grad.abs().sum() > 0
    assert centers.grad.abs().sum() > 0  # learnable centres (the Impostor Network's loose ones) learn
    # NNGK's centres are the index's keys: constants between refreshes.
    clf = NNGKClassifier(n_neighbors=2, embedding="identity", **FAST).fit(
        np.eye(4, dtype=np.float32), [0, 1, 0, 1]
    )
    assert not clf.index_.keys.requires_grad


def _spy_queries(monkeypatch):
    calls = []
    original = NeighborIndex.query

    def spy(self, queries, k, *, exclude=None):
        dist, ids = original(self, queries, k, exclude=exclude)
        calls.append((ids.clone(), None if exclude is None else exclude.clone()))
        return dist, ids

    monkeypatch.setattr(NeighborIndex, "query", spy)
    return calls


def test_a_training_row_never_retrieves_its_own_centre(digits, monkeypatch):
    X_train, _, y_train, _ = digits
    calls = _spy_queries(monkeypatch)  # the paper's procedure: each step searches (candidates=None)
    NNGKClassifier(n_neighbors=4, sigma=1.0, candidates=None, **{**FAST, "max_epochs": 2}).fit(
        X_train[:300], y_train[:300]
    )
    training = [(ids, exclude) for ids, exclude in calls if exclude is not None]
    assert len(training) == 2 * math.ceil(300 / 100)  # every training batch excluded its rows
    for ids, exclude in training:
        assert (exclude >= 0).all() and not (ids == exclude[:, None]).any()
    # The rows are distinct, so without exclusion the nearest centre of a training row is itself.
    clf = NNGKClassifier(n_neighbors=4, **FAST).fit(X_train[:300], y_train[:300])
    np.testing.assert_array_equal(clf.explain(X_train[:50], n_neighbors=1).indices[:, 0], np.arange(50))


def test_centres_are_refreshed_every_refresh_every_epochs(digits, monkeypatch):
    X_train, _, y_train, _ = digits
    refreshes = []
    original = NNGKClassifier._refresh

    def counting(self):
        original(self)
        refreshes.append(self.index_.keys.clone())

    monkeypatch.setattr(NNGKClassifier, "_refresh", counting)
    # The paper's procedure (candidates=None) refreshes while training; the sampled mode at the end.
    clf = NNGKClassifier(refresh_every=2, candidates=None, **{**FAST, "max_epochs": 6})
    clf.fit(X_train[:200], y_train[:200])
    assert (
        len(refreshes) == 2 + 1
    )  # before epochs 3 and 5, and at the end (the first are embedded on storing)
    assert not torch.allclose(refreshes[0], refreshes[1])  # the network moved the centres
    refreshes.clear()
    clf = NNGKClassifier(refresh_every=100, candidates=None, **{**FAST, "max_epochs": 3})
    clf.fit(X_train[:200], y_train[:200])
    assert len(refreshes) == 1  # never during training
    with torch.no_grad():  # the final centres are the final network's embeddings
        np.testing.assert_allclose(
            clf.index_.keys.numpy(), clf.module_(clf.centers_X_).numpy(), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("candidates", [7, 0.05, 50])
def test_sampled_candidates_vote_over_drawn_rows_with_gradients_through_both(candidates, digits, monkeypatch):
    # ModernNCA's stochastic neighbour sampling: each step votes densely over m stored rows (eq. 7
    # with importance weights), the row's own centre left out; gradients reach the embedding through
    # the query and through the candidates. No search. The batch's rows are stored rows drawn at
    # random, so they are candidates: m - 20 more are drawn (m = 50), and a drawn row that is in the
    # batch votes once; with m < 20 (7; 0.05 of 200 rows = 10) the vote is over the batch's first m.
    X_train, _, y_train, _ = digits
    X, y = X_train[:200], y_train[:200]
    searches = _spy_queries(monkeypatch)
    clf = NNGKClassifier(n_neighbors=4, sigma=2.0, candidates=candidates, **{**FAST, "max_epochs": 3})
    clf.fit(X, y)
    assert not [c for c in searches if c[1] is not None]  # training searched nothing
    module = clf.module_.double()
    Xb = torch.as_tensor(X[:20], dtype=torch.float64)
    ids = torch.arange(20)
    clf._row_center_map = torch.arange(200)
    clf._candidate_pool = None
    state = clf._generator.get_state()
    loss = clf._loss(Xb, torch.as_tensor(clf.classes_.searchsorted(y[:20])), ids)
    grads = torch.autograd.grad(loss, list(module.embedding.parameters()))
    # By hand, with the same draw; and the same with the candidates detached, which must differ.
    clf._generator.set_state(state)
    m = candidates if isinstance(candidates, int) else round(candidates * 200)
    extra = torch.randperm(200, generator=clf._generator)[: max(m - 20, 0)]
    extra = extra[~torch.isin(extra, ids)]
    drawn = torch.cat([ids, extra])[:m]
    if m - 20 > 0:
        assert 0 < extra.numel() <= m - 20
    z, c_extra = module(Xb), module(clf.memory_.X[extra].double())
    target = torch.as_tensor(clf.classes_.searchsorted(y[:20]))

    def by_hand(c):
        sq = ((z[:, None] - c[None]) ** 2).sum(-1)
        log_w = -sq / (2 * module.sigma**2) + module.log_importance[drawn]
        w = torch.softmax(log_w.masked_fill(drawn[None, :] == ids[:, None], float("-inf")), 1)
        p = (w @ torch.nn.functional.one_hot(clf.memory_.y[drawn], 10).double() + VOTE_FLOOR) / (
            1 + 10 * VOTE_FLOOR
        )
        return -torch.log(p[torch.arange(20), target]).mean()

    candidates_z = torch.cat([z, c_extra])[:m]
    expected = by_hand(candidates_z)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    params = list(module.embedding.parameters())
    for g, e, d in zip(
        grads,
        torch.autograd.grad(expected, params, retain_graph=True),
        torch.autograd.grad(by_hand(candidates_z.detach()), params),
    ):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-12)
        assert not torch.allclose(g, d, rtol=1e-6, atol=0)


def _counting_embedded_rows(digits, n, candidates, epochs):
    """NNGK fitted on n digits (batch 32), and the list its embedding appends each call's rows to."""
    X_train, _, y_train, _ = digits
    clf = NNGKClassifier(candidates=candidates, **{**FAST, "batch_size": 32, "max_epochs": epochs})
    clf.fit(X_train[:n], y_train[:n])
    rows = []
    clf.module_.embedding.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return clf, rows


def test_a_batch_of_rows_not_stored_still_votes_over_m_stored_candidates(digits):
    # A continual pass (the Impostor Network's add/drop) trains rows that are not centres yet (own
    # id -1): they are no candidates, so m stored rows are drawn, and the vote is not uniform.
    clf, rows = _counting_embedded_rows(digits, 300, candidates=16, epochs=3)
    X_train, _, y_train, _ = digits
    clf._row_center_map = torch.full((300,), -1)
    Xb = torch.as_tensor(X_train[:32], dtype=torch.float32)
    loss = clf._loss(Xb, torch.as_tensor(clf.classes_.searchsorted(y_train[:32])), torch.arange(32))
    assert rows == [32 + 16]
    assert loss.item() < 0.9 * math.log(10)  # uniform votes (every candidate masked): log(10)


def test_sampled_candidates_embed_the_batch_once(digits):
    # The batch's rows are candidates: a step embeds max(m, batch) rows, not m + batch.
    clf, rows = _counting_embedded_rows(digits, 320, candidates=48, epochs=1)
    X_train, _, y_train, _ = digits
    clf.partial_fit(X_train[:320], y_train[:320])
    assert set(rows[:10]) == {48}
    clf.set_params(candidates=20)
    rows.clear()
    clf.partial_fit(X_train[:320], y_train[:320])
    assert set(rows[:10]) == {32}


@pytest.mark.parametrize("name", ["NNGKClassifier", "ImpostorClassifier"])
def test_by_default_training_draws_candidates_instead_of_searching(name, digits, monkeypatch):
    # The default since the overhead benchmark (full MNIST, 3 seeds): as accurate as the search at a
    # fraction of its time. Training searches nothing; prediction searches the final centres.
    import sksemiparam

    X_train, X_test, y_train, _ = digits
    calls = _spy_queries(monkeypatch)
    clf = getattr(sksemiparam, name)(sigma=1.0, **{**FAST, "max_epochs": 2}).fit(X_train, y_train)
    assert clf.candidates == {"NNGKClassifier": 128, "ImpostorClassifier": 1024}[name]
    assert not [c for c in calls if c[1] is not None]  # no search with self-exclusion: no training search
    clf.predict(X_test)
    assert calls  # prediction searched


def test_sampled_candidates_learn_and_predict_with_the_final_centres(digits):
    X_train, X_test, y_train, y_test = digits
    clf = NNGKClassifier(candidates=64, **{**FAST, "max_epochs": 10}).fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.9
    with torch.no_grad():  # prediction searches the centres embedded by the final network
        np.testing.assert_allclose(
            clf.index_.keys.numpy(), clf.module_(clf.centers_X_).numpy(), rtol=1e-5, atol=1e-6
        )


def test_sampled_candidates_cycle_through_every_stored_row(digits):
    # Each step's candidates are distinct, and successive steps take successive slices of one
    # permutation: every stored row is drawn once before any is drawn twice.
    X_train, _, y_train, _ = digits
    clf = NNGKClassifier(candidates=64, **{**FAST, "max_epochs": 1}).fit(X_train[:300], y_train[:300])
    draws = [clf._draw_candidates(64, 300) for _ in range(4)]  # 256 of the 300 rows
    assert all(len(set(d.tolist())) == 64 for d in draws)
    assert len(set(torch.cat(draws).tolist())) == 256
    nxt = clf._draw_candidates(64, 300)  # 44 rows left: a new permutation
    assert len(set(nxt.tolist())) == 64
    np.testing.assert_array_equal(clf._draw_candidates(500, 300).numpy(), np.arange(300))


@pytest.mark.parametrize("name", ["NNGKClassifier", "ImpostorClassifier"])
def test_early_stopping_validates_against_the_current_centres(name, digits, monkeypatch):
    # Sampled candidates search nothing while training; the validation score must still come from
    # centres embedded by the network being validated, not those of the first epoch.
    import sksemiparam

    X_train, _, y_train, _ = digits
    seen = []
    cls = getattr(sksemiparam, name)
    score = cls._score_tensors

    def spy(self, X, y):
        with torch.no_grad():
            seen.append((self.index_.keys.clone(), self._center_keys()))
        return score(self, X, y)

    monkeypatch.setattr(cls, "_score_tensors", spy)
    cls(candidates=32, early_stopping=True, **{**FAST, "max_epochs": 3}).fit(X_train, y_train)
    assert len(seen) == 3
    for indexed, current in seen:
        torch.testing.assert_close(indexed, current)


def test_partial_fit_adds_the_new_examples_as_centres(digits):
    X_train, X_test, y_train, y_test = digits
    clf = NNGKClassifier(n_neighbors=8, **FAST)
    clf.partial_fit(X_train[:100], y_train[:100], classes=np.arange(10))
    assert clf.centers_X_.shape[0] == len(clf.index_) == clf.module_.log_importance.shape[0] == 100
    before = clf.module_.log_importance.detach().clone()
    clf.partial_fit(X_train[100:250], y_train[100:250])
    assert clf.centers_X_.shape[0] == len(clf.index_) == clf.module_.log_importance.shape[0] == 250
    np.testing.assert_array_equal(clf.centers_X_[100:].numpy(), X_train[100:250])
    assert not torch.equal(clf.module_.log_importance.detach()[:100], before)  # trained, then kept
    # AdamW's state grew with the importance it belongs to.
    state = clf._get_optimizer().state[clf.module_.log_importance]
    assert state["exp_avg"].shape == (250,)
    for _ in range(5):
        clf.partial_fit(X_train[250:600], y_train[250:600])
    assert clf.score(X_test, y_test) > 0.8


@pytest.mark.parametrize("estimator", ["nngk", "impostor"])
def test_partial_fit_passes_over_stored_rows_add_no_copies(estimator, digits, monkeypatch):
    # The partial_fit idiom for epochs: the same rows again. They keep their centres (each leaves
    # its own centre out of its vote), and only rows not stored yet, or stored with another label,
    # become centres.
    from sksemiparam import ImpostorClassifier

    make = {"nngk": NNGKClassifier, "impostor": ImpostorClassifier}[estimator]
    X_train, _, y_train, _ = digits
    clf = make(n_neighbors=4, candidates=None, **FAST)  # searches: the exclusions are visible
    clf.partial_fit(X_train[:100], y_train[:100], classes=np.arange(10))
    calls = _spy_queries(monkeypatch)
    clf.partial_fit(X_train[50:100], y_train[50:100])
    assert clf.centers_X_.shape[0] == len(clf.index_) == 100
    excluded = np.concatenate([exclude for _, exclude in calls if exclude is not None])
    np.testing.assert_array_equal(np.sort(excluded), np.arange(50, 100))  # their own centres
    for ids, exclude in calls:
        if exclude is not None:
            assert not (ids == exclude[:, None]).any()
    relabelled = (y_train[:10] + 1) % 10
    clf.partial_fit(np.vstack([X_train[90:120], X_train[:10]]), np.concatenate([y_train[90:120], relabelled]))
    assert clf.centers_X_.shape[0] == 100 + 20 + 10  # rows 100-119, and rows 0-9 under new labels
    np.testing.assert_array_equal(clf.centers_X_[100:120].numpy(), X_train[100:120])
    np.testing.assert_array_equal(clf.centers_y_[120:].cpu().numpy(), relabelled)
    # The identity -> centre lookup is a cache: not saved, rebuilt from the stored identities.
    import pickle

    loaded = pickle.loads(pickle.dumps(clf))
    assert loaded.memory_._slot_of is None
    for model in (clf, loaded):
        model.partial_fit(X_train[:130], y_train[:130])
    assert loaded.centers_X_.shape[0] == clf.centers_X_.shape[0] == 130 + 10
    np.testing.assert_array_equal(loaded.predict_proba(X_train[:20]), clf.predict_proba(X_train[:20]))


def test_explain_names_the_deciding_training_examples():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(-3, 0.3, (20, 2)), rng.normal(3, 0.3, (20, 2))]).astype(np.float32)
    y = np.array(["left"] * 20 + ["right"] * 20)
    clf = NNGKClassifier(n_neighbors=5, embedding="identity", **FAST).fit(X, y)
    e = clf.explain(np.array([[-3.0, 0.0], [3.0, 0.0]]))
    assert e.indices.shape == e.labels.shape == e.weights.shape == e.distances.shape == (2, 5)
    assert (e.indices[0] < 20).all() and (e.indices[1] >= 20).all()
    assert (e.labels[0] == "left").all() and (e.labels[1] == "right").all()
    np.testing.assert_allclose(e.weights.sum(1), 1.0)
    assert (np.diff(e.distances, axis=1) >= 0).all()
    # The weights are eq. (7)'s terms: the prediction is their label-wise sum.
    proba = clf.predict_proba(np.array([[-3.0, 0.0]]))
    assert proba[0, 0] > 0.99
    with pytest.raises(ValueError, match=r"`n_neighbors` must be an int in \[1, 40\]"):
        clf.explain(X[:1], n_neighbors=41)


def test_all_centres_dense_mode_equals_k_equal_to_all(digits):
    X_train, X_test, y_train, _ = digits
    dense = NNGKClassifier(n_neighbors=None, **FAST).fit(X_train[:150], y_train[:150])
    every = NNGKClassifier(n_neighbors=150, **FAST).fit(X_train[:150], y_train[:150])
    np.testing.assert_allclose(dense.predict_proba(X_test), every.predict_proba(X_test), rtol=1e-4, atol=1e-6)


def test_too_many_neighbours_for_the_stored_examples(digits):
    X_train, _, y_train, _ = digits
    with pytest.raises(ValueError, match=r"`n_neighbors`=60 is larger than the 50 training samples"):
        NNGKClassifier(n_neighbors=60, **FAST).fit(X_train[:50], y_train[:50])
    clf = NNGKClassifier(n_neighbors=60, **FAST)
    clf.partial_fit(X_train[:80], y_train[:80], classes=np.arange(10))
    before = clf.predict_proba(X_train[:5])
    clf.set_params(n_neighbors=200)
    with pytest.raises(ValueError, match=r"`n_neighbors`=200 is larger than the 100 training samples"):
        clf.partial_fit(X_train[80:100], y_train[80:100])
    clf.set_params(n_neighbors=60)
    np.testing.assert_array_equal(clf.predict_proba(X_train[:5]), before)  # left as it was
    assert clf.centers_X_.shape[0] == 80


@pytest.mark.parametrize("estimator", ["nngk", "impostor"])
def test_auto_neighbours_vote_with_all_centres_until_32_are_stored(estimator, digits):
    # A stream starting with a few rows: "auto" (the default) lets the first small partial_fit
    # through, where an explicit 32 is an error, and is 32 once enough centres are stored.
    from sksemiparam import ImpostorClassifier

    make = {"nngk": NNGKClassifier, "impostor": ImpostorClassifier}[estimator]
    X_train, X_test, y_train, _ = digits
    assert make().n_neighbors == "auto"
    with pytest.raises(ValueError, match=r"`n_neighbors`=32 is larger than the 10 training samples"):
        make(n_neighbors=32, **FAST).partial_fit(X_train[:10], y_train[:10], classes=np.arange(10))
    auto = make(**FAST).partial_fit(X_train[:10], y_train[:10], classes=np.arange(10))
    assert auto.explain(X_test[:3]).indices.shape == (3, 10)  # all 10 centres vote
    auto.partial_fit(X_train[10:100], y_train[10:100])
    assert auto.explain(X_test[:3]).indices.shape == (3, 32)
    fixed = make(n_neighbors=10, **FAST).partial_fit(X_train[:10], y_train[:10], classes=np.arange(10))
    fixed.set_params(n_neighbors=32).partial_fit(X_train[10:100], y_train[10:100])
    np.testing.assert_allclose(auto.predict_proba(X_test), fixed.predict_proba(X_test), rtol=1e-5, atol=1e-6)


def test_ewc_skips_the_per_centre_importance(digits):
    X_train, _, y_train, _ = digits
    clf = NNGKClassifier(ewc_lambda=10.0, **FAST)
    clf.partial_fit(X_train[:100], y_train[:100], classes=np.arange(10))
    clf.end_task(X_train[:100], y_train[:100], max_samples=20)
    assert "log_importance" not in clf.ewc_state_[0][0]
    clf.partial_fit(X_train[100:200], y_train[100:200])  # the importance grew; EWC still applies
    assert clf.centers_X_.shape[0] == 200


@pytest.mark.approximate
def test_approximate_index_agrees_with_exact(digits):
    X_train, X_test, y_train, _ = digits
    exact = NNGKClassifier(index="exact", **FAST).fit(X_train, y_train)
    approximate = clone(exact).set_params(index="approximate").fit(X_train, y_train)
    assert approximate.index_.backend_ == "approximate"
    agreement = np.mean(exact.predict(X_test) == approximate.predict(X_test))
    assert agreement > 0.95


def test_sigma_scale_is_the_median_nearest_centre_distance():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(0).normal(size=(255, 4)).astype(np.float32) * 50  # odd: one median
    y = np.arange(255) % 3
    # identity embedding: the centres are the rows themselves
    clf = NNGKClassifier(embedding="identity", **{**FAST, "max_epochs": 1}).fit(X, y)
    dist, _ = NearestNeighbors(n_neighbors=2).fit(X).kneighbors(X)
    assert clf.module_.sigma.item() == pytest.approx(np.median(dist[:, 1]), rel=1e-4)
    fixed = NNGKClassifier(sigma=2.5, embedding="identity", **{**FAST, "max_epochs": 1}).fit(X, y)
    assert fixed.module_.sigma.item() == pytest.approx(2.5)


def test_sigma_scale_searches_256_sampled_centres_among_all(monkeypatch):
    # 256 centres, not 1,000: on MNIST the median moved by ~1% (within the draws' own spread) and its
    # search fell from 0.50 to 0.09 s, a third of a softmax epoch (see KernelVoteClassifierBase).
    from sklearn.neighbors import NearestNeighbors

    calls = _spy_queries(monkeypatch)
    X = np.random.default_rng(1).normal(size=(3001, 4)).astype(np.float32)
    y = np.arange(3001) % 3
    clf = NNGKClassifier(embedding="identity", **{**FAST, "max_epochs": 1}).fit(X, y)
    scale_search = calls[0]
    assert scale_search[0].shape == (256, 16) and scale_search[1].shape == (256,)
    sampled = scale_search[1].numpy()
    dist, _ = NearestNeighbors(n_neighbors=2).fit(X).kneighbors(X[sampled])
    lower_median = np.sort(dist[:, 1])[127]  # torch.median: the lower of the two middle values
    assert clf.module_.sigma.item() == pytest.approx(lower_median, rel=1e-4)


def test_sigma_scale_ignores_duplicated_centres():
    X = np.random.default_rng(0).normal(size=(41, 4)).astype(np.float32) * 50
    y = np.arange(41) % 3
    dup = NNGKClassifier(embedding="identity", **{**FAST, "max_epochs": 1}).fit(
        np.repeat(X, 3, 0), np.repeat(y, 3)
    )
    plain = NNGKClassifier(embedding="identity", **{**FAST, "max_epochs": 1}).fit(X, y)
    assert dup.module_.sigma.item() == pytest.approx(plain.module_.sigma.item(), rel=1e-4)
    # Nothing but duplicates: no scale to measure, the width stays 1.
    same = NNGKClassifier(embedding="identity", **{**FAST, "max_epochs": 1}).fit(
        np.zeros((40, 2)), np.arange(40) % 2
    )
    assert same.module_.sigma.item() == pytest.approx(1.0)
