"""MetaNeighborhoodsRegressor: the inner step by hand, the attention's gradients, the regressor base."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, make_regression
from torch import nn

from sksemiparam import MetaNeighborhoodsClassifier, MetaNeighborhoodsRegressor
from sksemiparam.nn import CosineLinear, MetaNeighborhoodsNet, dictionary_attention, meta_neighborhoods

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"n_entries": 16, "head_layer_sizes": (16,), "max_epochs": 5, "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X.astype(np.float32), y


def tiny_net(n_inner_steps=1, first_order=False):
    torch.manual_seed(0)
    net = MetaNeighborhoodsNet(
        embedding=nn.Identity(), embedding_dim=1, n_outputs=1, n_entries=3, head_layer_sizes=(),
        gamma=2.0, n_inner_steps=n_inner_steps, inner_lr_init=0.3, first_order=first_order,
    ).double()  # fmt: skip
    with torch.no_grad():
        net.keys.copy_(torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64))
        net.values.copy_(torch.tensor([[1.0], [0.0], [2.0]], dtype=torch.float64))
        net.head[0].weight.fill_(0.5)
        net.head[0].bias.fill_(-0.25)
        net.inner_lr.fill_(0.3)  # exactly, not 0.3 rounded to float32 and widened
    return net


def test_one_inner_step_on_a_linear_head_by_hand():
    x, k, v, a, b, gamma, alpha = (
        0.8,
        np.array([0.0, 1.0, 3.0]),
        np.array([1.0, 0.0, 2.0]),
        0.5,
        -0.25,
        2.0,
        0.3,
    )
    # eq. (11): omega_j = softmax_j(-gamma |x - k_j|)
    scores = -gamma * np.abs(x - k)
    omega = np.exp(scores - scores.max())
    omega /= omega.sum()
    # inner loss sum_j omega_j (a k_j + b - v_j)^2 and its gradient in (a, b)
    residual = a * k + b - v
    grad_a, grad_b = (omega * 2 * residual * k).sum(), (omega * 2 * residual).sum()
    expected = (a - alpha * grad_a) * x + (b - alpha * grad_b)
    out = tiny_net()(torch.tensor([[x]], dtype=torch.float64))
    assert out.item() == pytest.approx(expected, rel=1e-12)


def test_zero_inner_steps_is_the_plain_output_network(diabetes):
    X, y = diabetes
    reg = MetaNeighborhoodsRegressor(n_inner_steps=0, **FAST).fit(X, y)
    with torch.no_grad():
        plain = reg.module_.head(torch.from_numpy(X[:20])).double().numpy()[:, 0]
    np.testing.assert_allclose(reg.predict(X[:20]), plain * reg.y_scale_[0] + reg.y_mean_[0], rtol=1e-6)


@pytest.mark.parametrize("similarity", ["euclidean", "cosine"])
def test_gradcheck_attention(similarity):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, k: dictionary_attention(z, k, 1.5, similarity), (z, keys))
    omega = dictionary_attention(z, keys, 1.5, similarity)
    np.testing.assert_allclose(omega.sum(1).detach().numpy(), 1.0)


def test_dictionary_and_rate_learn_through_the_inner_step():
    for first_order in (False, True):
        net = tiny_net(first_order=first_order)
        net(torch.tensor([[0.8], [2.0]], dtype=torch.float64)).sum().backward()
        assert net.keys.grad.abs().sum() > 0 and net.values.grad.abs().sum() > 0
        assert net.inner_lr.grad.abs() > 0
    second, first = tiny_net(), tiny_net(first_order=True)
    x = torch.tensor([[0.8]], dtype=torch.float64)
    second(x).sum().backward()
    first(x).sum().backward()
    assert not torch.allclose(second.head[0].weight.grad, first.head[0].weight.grad)


def test_two_inner_steps_on_a_linear_head_by_hand():
    x, k, v, gamma, alpha = 0.8, np.array([0.0, 1.0, 3.0]), np.array([1.0, 0.0, 2.0]), 2.0, 0.3
    omega = np.exp(-gamma * np.abs(x - k))
    omega /= omega.sum()
    a, b = 0.5, -0.25
    for _ in range(2):  # each step at the query's current (a, b)
        residual = a * k + b - v
        a, b = a - alpha * (omega * 2 * residual * k).sum(), b - alpha * (omega * 2 * residual).sum()
    out = tiny_net(n_inner_steps=2)(torch.tensor([[x]], dtype=torch.float64))
    assert out.item() == pytest.approx(a * x + b, rel=1e-12)


def _adaptation_case(task, inner_lr, first_order, per_row, n_inner_steps, hidden):
    """A float64 net, queries, and each row's entries (all of them, or 4 per row)."""
    torch.manual_seed(0)
    net = MetaNeighborhoodsNet(
        embedding=nn.Identity(), embedding_dim=4, n_outputs=3, n_entries=9, head_layer_sizes=hidden,
        task=task, similarity="euclidean" if task == "regression" else "cosine",
        cosine_output=task == "classification", inner_lr=inner_lr, first_order=first_order,
        n_inner_steps=n_inner_steps,
    ).double()  # fmt: skip
    with torch.no_grad():
        net.keys.normal_()  # spread out: ReLUs on both sides for the entries, not only the queries
        for rate in net.inner_lr.values() if inner_lr == "diagonal" else [net.inner_lr]:
            rate.uniform_(0.05, 0.3)  # a diagonal rate that differs entry by entry
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 9, (6, 4)) if per_row else None
    return net, z, ids


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("inner_lr", ["scalar", "diagonal"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("n_inner_steps", [1, 2, 3])
@pytest.mark.parametrize("hidden", [(), (7, 6)])
def test_fast_inner_steps_equal_the_per_query_autograd_copy(
    task, inner_lr, first_order, per_row, n_inner_steps, hidden
):
    """The hand-differentiated inner steps compute the same outputs, and the same gradients in the
    queries and every parameter, as a functional copy of phi per query differentiated by autograd."""
    net, z, ids = _adaptation_case(task, inner_lr, first_order, per_row, n_inner_steps, hidden)

    def run(path):
        net.zero_grad()
        z.grad = None
        keys, values = (net.keys, net.values) if ids is None else (net.keys[ids], net.values[ids])
        omega = dictionary_attention(z, keys, net.gamma, net.similarity)
        out = path(z, omega, keys, values)
        out.sin().sum().backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
        return [out.detach().clone(), z.grad.clone()] + [g.clone() for g in grads]

    fast, reference = run(net.adapted_outputs), run(net.reference_outputs)
    names = ["outputs", "queries"] + [name for name, _ in net.named_parameters()]
    for name, a, b in zip(names, fast, reference):
        # atol: gradients that are 0 in exact arithmetic come out as rounding noise in either path
        atol = 1e-11 * max(float(b.abs().max()), 1.0)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=atol, err_msg=name)
    assert net.keys.grad.abs().sum() > 0 and net.values.grad.abs().sum() > 0


@pytest.mark.parametrize("per_row", [False, True])
def test_rows_in_chunks_give_the_same_outputs_and_gradients(per_row, monkeypatch):
    """Per-query inner steps go in chunks of rows (memory at prediction); one row a chunk changes nothing."""
    net, z, ids = _adaptation_case("classification", "diagonal", False, per_row, 2, (7, 6))

    def run():
        net.zero_grad()
        keys, values = (net.keys, net.values) if ids is None else (net.keys[ids], net.values[ids])
        out = net.adapted_outputs(z, dictionary_attention(z, keys, net.gamma, net.similarity), keys, values)
        out.sin().sum().backward()
        return [out.detach().clone()] + [p.grad.clone() for p in net.parameters()]

    whole = run()
    monkeypatch.setattr(meta_neighborhoods, "_CHUNK_ELEMENTS", 1)
    for a, b in zip(run(), whole):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def test_diagonal_rates_match_the_output_network():
    reg = MetaNeighborhoodsRegressor(inner_lr="diagonal", **FAST).fit(*make_regression(60, 4, random_state=0))
    rates = dict(reg.module_.inner_lr.items())
    for name, p in reg.module_.head.named_parameters():
        assert rates[name.replace(".", "_")].shape == p.shape


def test_multi_output_targets_are_standardised_and_mapped_back():
    X, y = make_regression(80, 5, n_targets=2, random_state=0)
    y = y * [1.0, 1000.0] + [5.0, -3000.0]
    reg = MetaNeighborhoodsRegressor(**{**FAST, "max_epochs": 300}).fit(X, y)
    np.testing.assert_allclose(reg.y_mean_, y.mean(0))
    np.testing.assert_allclose(reg.y_scale_, y.std(0))
    pred = reg.predict(X)
    assert pred.shape == (80, 2) and reg.n_outputs_ == 2
    assert reg.score(X, y) > 0.5
    with pytest.raises(ValueError, match="`y` has 1 output\\(s\\) but the model was fitted with 2"):
        reg.partial_fit(X, y[:, 0])


def test_early_stopping_scores_r2(diabetes):
    X, y = diabetes
    reg = MetaNeighborhoodsRegressor(early_stopping=True, **{**FAST, "max_epochs": 30}).fit(X, y)
    assert len(reg.validation_scores_) == reg.n_iter_
    assert reg.best_validation_score_ == max(reg.validation_scores_) <= 1


# ------------------------------------------------------------------------------ classification
def test_classifier_parts_follow_the_paper(digits):
    X_train, X_test, y_train, y_test = digits
    clf = MetaNeighborhoodsClassifier(n_entries=32, max_epochs=15, random_state=0).fit(X_train, y_train)
    module = clf.module_
    assert not isinstance(module.embedding.layers[-1], nn.ReLU)  # no ReLU after the encoder
    assert isinstance(module.head[-1], CosineLinear) and module.head[-1].scale.requires_grad
    assert isinstance(module.auxiliary, CosineLinear)
    assert module.similarity == "cosine" and module.gamma == 5.0
    assert clf.score(X_test, y_test) > 0.9
    assert MetaNeighborhoodsClassifier(aux_weight=0.0, **FAST).fit(X_train, y_train).module_.auxiliary is None


def test_classifier_zero_inner_steps_is_the_plain_cosine_classifier(digits):
    X_train, X_test, y_train, _ = digits
    clf = MetaNeighborhoodsClassifier(n_inner_steps=0, **FAST).fit(X_train, y_train)
    with torch.no_grad():
        logits = clf.module_.head(clf.module_.embedding(torch.from_numpy(X_test)))
    np.testing.assert_allclose(
        clf.predict_proba(X_test), torch.softmax(logits, 1).double().numpy(), rtol=1e-5
    )


def test_cosine_linear_is_scaled_cosine():
    layer = CosineLinear(3, 2, scale_init=4.0)
    z = torch.tensor([[1.0, 0.0, 0.0]])
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0]]))
    np.testing.assert_allclose(layer(z).detach().numpy(), [[4.0, 0.0]], atol=1e-6)


# ------------------------------------------------------------------------- large dictionaries
@pytest.mark.parametrize("similarity", ["euclidean", "cosine"])
def test_all_entries_as_neighbours_equals_full_attention(similarity):
    X, y = make_regression(60, 4, random_state=0)
    full = MetaNeighborhoodsRegressor(similarity=similarity, **FAST).fit(X, y)
    every = MetaNeighborhoodsRegressor(similarity=similarity, n_neighbors=16, **FAST).fit(X, y)
    np.testing.assert_allclose(every.predict(X), full.predict(X), rtol=1e-4, atol=1e-4)


def test_neighbour_attention_uses_only_the_nearest_entries():
    net = tiny_net()
    z = torch.tensor([[0.8]], dtype=torch.float64)
    ids = torch.tensor([[1, 0]])  # the two entries nearest 0.8: keys 1.0 and 0.0
    restricted = net.outputs(z, ids)
    # By hand, as above but over entries 1 and 0 only.
    x, k, v, a, b, gamma, alpha = 0.8, np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5, -0.25, 2.0, 0.3
    omega = np.exp(-gamma * np.abs(x - k))
    omega /= omega.sum()
    residual = a * k + b - v
    expected = (a - alpha * (omega * 2 * residual * k).sum()) * x + (b - alpha * (omega * 2 * residual).sum())
    assert restricted.item() == pytest.approx(expected, rel=1e-12)
    restricted.sum().backward()
    assert net.keys.grad[2].abs().sum() == 0 and net.keys.grad[:2].abs().sum() > 0


def test_too_many_neighbours_for_the_dictionary():
    X, y = make_regression(30, 3, random_state=0)
    with pytest.raises(ValueError, match=r"`n_neighbors`=17 is larger than the 16 dictionary entries"):
        MetaNeighborhoodsRegressor(n_neighbors=17, **FAST).fit(X, y)
