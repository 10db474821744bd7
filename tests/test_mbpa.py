"""MbPAClassifier: memory, local adaptation (eq. 1) by hand and against a per-query loop, EWC."""

import copy
import itertools

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from sksemiparam import MbPAClassifier
from sksemiparam._memory import row_identities
from sksemiparam.nn import adapt_and_predict, memory_kernel_weights

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def fitted_once(digits):
    """Fitted once per module; never changed: tests use the copy ``fitted``."""
    X_train, _, y_train, _ = digits
    return MbPAClassifier(max_epochs=20, random_state=0, device="cpu").fit(X_train, y_train)


@pytest.fixture
def fitted(fitted_once):
    """A copy of the fitted model for one test, which may set its parameters."""
    return copy.deepcopy(fitted_once)


def test_all_inference_modes_learn_digits(fitted, digits):
    _, X_test, _, y_test = digits
    probas = {}
    for inference in ("adapt", "parametric", "memory", "mixture"):
        fitted.set_params(inference=inference)
        assert fitted.get_params()["inference"] == inference
        proba = probas[inference] = fitted.predict_proba(X_test[:50])
        assert proba.shape == (50, 10) and (proba >= 0).all(), inference
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6, err_msg=inference)
        assert fitted.score(X_test, y_test) > 0.85, inference
    # Each mode predicts in its own way: none falls back to another.
    for a, b in itertools.combinations(probas, 2):
        assert not np.allclose(probas[a], probas[b]), (a, b)


def test_zero_adaptation_steps_is_the_parametric_model(fitted, digits):
    _, X_test, _, _ = digits
    adapt0 = fitted.set_params(inference="adapt", adapt_steps=0).predict_proba(X_test)
    parametric = fitted.set_params(inference="parametric").predict_proba(X_test)
    np.testing.assert_allclose(adapt0, parametric, rtol=1e-6, atol=1e-7)


def test_memory_holds_one_entry_per_training_row_after_many_epochs(fitted, digits):
    X_train, _, _, _ = digits
    assert len(fitted.memory_) == len(X_train)
    assert len(fitted.index_) == len(X_train)


def test_memory_never_exceeds_memory_size_over_many_partial_fits(digits):
    X_train, _, y_train, _ = digits
    clf = MbPAClassifier(memory_size=100, n_neighbors=8, random_state=0)
    for i, start in enumerate(range(0, 600, 30)):
        clf.partial_fit(X_train[start : start + 30], y_train[start : start + 30], classes=np.arange(10))
        assert len(clf.memory_) == min(100, 30 * (i + 1))
    # The last 100 rows written are kept: the three last calls whole, and 10 rows of the one before
    # (written in shuffled order within its call).
    labels = clf._encode_known_targets(y_train[:600])
    stored = np.concatenate(
        [
            clf.memory_.lookup(row_identities(X_train[s : s + 30], labels[s : s + 30])) >= 0
            for s in range(0, 600, 30)
        ]
    )
    kept = set(np.flatnonzero(stored).tolist())
    assert set(range(510, 600)) <= kept and min(kept) >= 480 and len(kept) == 100


def test_memory_vote_is_the_kernel_weighted_vote(fitted, digits):
    X_train, X_test, y_train, _ = digits
    clf = fitted.set_params(inference="memory", n_neighbors=5)
    with torch.no_grad():
        keys = clf.module_.embed(torch.from_numpy(X_train)).double().numpy()  # memory keys: final f
        q = clf.module_.embed(torch.from_numpy(X_test[:10])).double().numpy()
    stored = clf.memory_.keys.double().numpy()
    # Keys were written during training, under an earlier f: use the stored ones.
    d = ((q[:, None, :] - stored[None]) ** 2).sum(-1)
    labels = clf.memory_.y.numpy()
    expected = np.zeros((10, 10))
    for i in range(10):
        nearest = np.argsort(d[i])[:5]
        w = 1.0 / (clf.kernel_epsilon + d[i, nearest])
        for j, wj in zip(nearest, w / w.sum()):
            expected[i, labels[j]] += wj
    proba = clf.predict_proba(X_test[:10])
    np.testing.assert_allclose(
        proba, np.maximum(expected, 1e-12) / np.maximum(expected, 1e-12).sum(1, keepdims=True), atol=1e-5
    )
    assert keys.shape == stored.shape


def test_single_adaptation_step_by_hand():
    # A linear softmax head on 1-D keys: logits = W h + b, W (2, 1), b (2,).
    head = nn.Linear(1, 2).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.5], [-0.5]], dtype=torch.float64))
        head.bias.copy_(torch.tensor([0.1, -0.1], dtype=torch.float64))
    h = np.array([1.0, 2.0])  # the two neighbours' keys
    v = np.array([1, 0])  # their labels
    w = np.array([0.75, 0.25])  # their kernel weights
    q, lr = 1.5, 0.4
    W, b = np.array([0.5, -0.5]), np.array([0.1, -0.1])
    # d/dW of -sum_k w_k log softmax(W h_k + b)[v_k] = sum_k w_k (p_k - e_{v_k}) h_k; the pull-back
    # term's gradient is 0 at theta_0.
    gW, gb = np.zeros(2), np.zeros(2)
    for hk, vk, wk in zip(h, v, w):
        logits = W * hk + b
        p = np.exp(logits - logits.max())
        p /= p.sum()
        e = np.eye(2)[vk]
        gW += wk * (p - e) * hk
        gb += wk * (p - e)
    W1, b1 = W - lr * gW, b - lr * gb
    logits = W1 * q + b1
    expected = logits - np.log(np.exp(logits).sum())

    out = adapt_and_predict(
        head,
        torch.tensor([[q]], dtype=torch.float64),
        torch.tensor(h, dtype=torch.float64).reshape(1, 2, 1),
        torch.tensor(v).reshape(1, 2),
        torch.tensor(w, dtype=torch.float64).reshape(1, 2),
        steps=1,
        lr=lr,
        reg=0.3,
    )
    np.testing.assert_allclose(out[0].detach().numpy(), expected, rtol=1e-12)


def test_batched_adaptation_equals_a_per_query_loop():
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    n, K = 6, 5
    queries = torch.randn(n, 4, generator=g)
    keys = torch.randn(n, K, 4, generator=g)
    labels = torch.randint(0, 3, (n, K), generator=g)
    weights = memory_kernel_weights(torch.rand(n, K, generator=g), 1e-3)
    steps, lr, reg = 3, 0.2, 0.05
    batched = adapt_and_predict(head, queries, keys, labels, weights, steps=steps, lr=lr, reg=reg)

    theta0 = [p.detach().clone() for p in head.parameters()]
    for i in range(n):
        local = copy.deepcopy(head)
        params = list(local.parameters())
        for _ in range(steps):
            log_p = torch.log_softmax(local(keys[i]), 1)
            loss = -(weights[i] * log_p[torch.arange(K), labels[i]]).sum()
            loss = loss + reg * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, theta0))
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, gp in zip(params, grads):
                    p -= lr * gp
        expected = torch.log_softmax(local(queries[i : i + 1]), 1)[0]
        torch.testing.assert_close(batched[i], expected, rtol=1e-6, atol=1e-6)
    # The head itself is untouched: theta^x is discarded.
    assert all(torch.equal(p, p0) for p, p0 in zip(head.parameters(), theta0))


def test_adaptation_moves_predictions_toward_the_neighbours(fitted, digits):
    _, X_test, _, _ = digits
    strong = fitted.set_params(adapt_steps=20, adapt_lr=0.5, adapt_reg=0.0).predict_proba(X_test[:50])
    weak = fitted.set_params(adapt_steps=0).predict_proba(X_test[:50])
    vote = fitted.set_params(inference="memory").predict_proba(X_test[:50])
    assert np.abs(strong - vote).mean() < np.abs(weak - vote).mean()


def test_overshooting_adaptation_is_rejected(fitted, digits):
    _, X_test, _, _ = digits
    with pytest.raises(
        ValueError, match=r"`adapt_lr` \* `adapt_reg` = 1 makes every adaptation step overshoot"
    ):
        clone(fitted).set_params(adapt_lr=1.0, adapt_reg=1.0).fit(X_test, np.arange(len(X_test)) % 10)
    with pytest.raises(ValueError, match="overshoot"):
        fitted.set_params(adapt_lr=2.0, adapt_reg=0.5).predict(X_test[:2])


def test_too_many_neighbours_for_the_memory(digits):
    X_train, _, y_train, _ = digits
    with pytest.raises(ValueError, match=r"`n_neighbors`=50 is larger than the 40 samples stored in memory"):
        MbPAClassifier(n_neighbors=50, memory_size=40, max_epochs=1).fit(X_train, y_train)


# ----------------------------------------------------------------------------------------- EWC
def test_ewc_penalty_is_zero_at_the_anchor_and_grows_quadratically(digits):
    X_train, _, y_train, _ = digits
    clf = MbPAClassifier(max_epochs=2, ewc_lambda=10.0, random_state=0).fit(X_train, y_train)
    clf.end_task(X_train, y_train, max_samples=200)
    ((anchor, fisher),) = clf.ewc_state_
    assert all((f >= 0).all() for f in fisher.values()) and any((f > 0).any() for f in fisher.values())
    with torch.no_grad():
        assert float(clf._ewc_penalty()) == 0.0
    direction = {n: torch.randn_like(p) for n, p in anchor.items()}
    penalties = []
    for scale in (0.5, 1.0, 2.0):
        with torch.no_grad():
            for n, p in clf.module_.named_parameters():
                p.copy_(anchor[n] + scale * direction[n])
            penalties.append(float(clf._ewc_penalty()))
    assert 0 < penalties[0] < penalties[1] < penalties[2]
    np.testing.assert_allclose(penalties[2] / penalties[1], 4.0, rtol=1e-4)
    np.testing.assert_allclose(penalties[1] / penalties[0], 4.0, rtol=1e-4)


def test_end_task_does_nothing_without_ewc_and_checks_labels(digits):
    X_train, _, y_train, _ = digits
    clf = MbPAClassifier(max_epochs=1, random_state=0).fit(X_train[y_train < 5], y_train[y_train < 5])
    clf.end_task(X_train, y_train)
    assert clf.ewc_state_ == []
    clf.set_params(ewc_lambda=1.0)
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        clf.end_task(X_train, y_train)


def test_ewc_keeps_important_weights_near_the_first_task(digits):
    X_train, _, y_train, _ = digits
    first, second = y_train < 5, y_train >= 5

    def drift(ewc_lambda):
        clf = MbPAClassifier(max_epochs=1, ewc_lambda=ewc_lambda, random_state=0)
        for _ in range(5):
            clf.partial_fit(X_train[first], y_train[first], classes=np.arange(10))
        clf.end_task(X_train[first], y_train[first])
        anchor, fisher = clf.ewc_state_[0] if clf.ewc_state_ else (None, None)
        before = {n: p.detach().clone() for n, p in clf.module_.named_parameters()}
        for _ in range(5):
            clf.partial_fit(X_train[second], y_train[second])
        return sum(((p.detach() - before[n]) ** 2).sum() for n, p in clf.module_.named_parameters())

    assert drift(1000.0) < drift(0.0)


def _two_conflicting_tasks():
    """Task A: the label is the sign of x0 (x1 is 0). Task B: x0 carries it reversed and twice as
    strongly, x1 weakly and the right way round. A logistic regression w = (1, 10) solves both;
    plain training on B turns w0 negative and forgets A."""
    rng = np.random.default_rng(0)
    yA, yB = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    sA, sB = 2 * yA - 1, 2 * yB - 1
    XA = np.c_[sA + 0.3 * rng.normal(size=400), np.zeros(400)].astype(np.float32)
    XB = np.c_[-2 * sB + 0.3 * rng.normal(size=400), 0.5 * sB + 0.1 * rng.normal(size=400)]
    return XA, yA, XB.astype(np.float32), yB


@pytest.mark.parametrize("ewc_lambda", [0.0, 100.0])
def test_ewc_keeps_task_a_on_two_conflicting_tasks(ewc_lambda):
    XA, yA, XB, yB = _two_conflicting_tasks()
    clf = MbPAClassifier(
        inference="parametric", embedding="identity", head_layer_sizes=(), ewc_lambda=ewc_lambda,
        learning_rate=0.05, batch_size=50, random_state=0, device="cpu",
    )  # fmt: skip
    for _ in range(10):
        clf.partial_fit(XA, yA, classes=[0, 1])
    clf.end_task(XA, yA)
    assert clf.score(XA, yA) > 0.99
    for _ in range(30):
        clf.partial_fit(XB, yB)
    assert clf.score(XB, yB) > 0.99
    if ewc_lambda == 0:
        assert clf.score(XA, yA) < 0.05  # forgotten: w0 turned negative
        return
    # x1 is 0 throughout task A: it says nothing about A, so its weights are free to learn B
    fisher = clf.ewc_state_[0][1]["head.0.weight"]
    assert (fisher[:, 1] == 0).all() and (fisher[:, 0] > 0).all()
    assert clf.score(XA, yA) > 0.99  # kept


def test_partial_fit_over_rows_already_stored_overwrites_their_entries(digits):
    X_train, _, y_train, _ = digits
    clf = MbPAClassifier(n_neighbors=8, random_state=0)
    for _ in range(3):  # the partial_fit idiom for epochs
        clf.partial_fit(X_train[:200], y_train[:200], classes=np.arange(10))
    assert len(clf.memory_) == len(clf.index_) == 200
    keys = clf.memory_.keys.clone()
    slots = clf.memory_.lookup(row_identities(X_train[150:200], y_train[150:200]))  # labels 0-9 = codes
    clf.partial_fit(X_train[150:250], y_train[150:250])  # 50 stored (keys rewritten), 50 new
    assert len(clf.memory_) == 250 and (slots >= 0).all()
    np.testing.assert_array_equal(
        clf.memory_.lookup(row_identities(X_train[150:200], y_train[150:200])), slots
    )
    rewritten = (clf.memory_.keys[slots] != keys[slots]).any(1)
    assert rewritten.all()  # each under the embedding of its latest write


@pytest.mark.parametrize("policy", ["fifo", "reservoir", "class_balanced"])
def test_memory_policy_decides_which_tasks_a_full_memory_keeps(policy, digits):
    X_train, _, y_train, _ = digits
    clf = MbPAClassifier(
        memory_size=60, memory_policy=policy, embedding="identity", index="exact", random_state=0,
        device="cpu",
    )  # fmt: skip
    for task in ((0, 1), (2, 3), (4, 5)):  # three tasks of two classes, one pass each
        rows = np.isin(y_train, task)
        clf.partial_fit(X_train[rows], y_train[rows], classes=np.arange(10))
    held = np.bincount(clf.classes_[clf.memory_.y.numpy()], minlength=6)[:6]
    assert held.sum() == 60
    if policy == "fifo":  # the newest rows only: the last task
        assert held[:4].sum() == 0
    elif policy == "reservoir":  # a uniform sample of ~750 rows: ~10 of each class
        assert held.min() >= 3, held
    else:  # equal shares of the six classes
        assert held.tolist() == [10] * 6


def test_a_sampling_memory_saves_and_loads_with_its_draws(digits, tmp_path):
    from sksemiparam.persistence import load, save

    X_train, X_test, y_train, _ = digits
    params = {"memory_size": 50, "memory_policy": "class_balanced", "max_epochs": 2, "device": "cpu"}
    clf = MbPAClassifier(random_state=0, **params).fit(X_train, y_train)
    save(clf, tmp_path / "model.safetensors")
    loaded = load(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(loaded.predict(X_test), clf.predict(X_test))
    # training on continues the same draws: the same entries are kept
    clf.partial_fit(X_test, np.zeros(len(X_test), dtype=int))
    loaded.partial_fit(X_test, np.zeros(len(X_test), dtype=int))
    np.testing.assert_array_equal(loaded.memory_.y.numpy(), clf.memory_.y.numpy())
