"""MbPA's batched adaptation (nn.adapt_and_predict) against the straightforward computation: for each
query, a copy of the output network takes the steps with torch.autograd, in float64.

The Linear/ReLU heads of MbPANet take the closed-form path (hand-written gradients, the first layer
low rank when there are fewer neighbours than key dimensions, per-query weights otherwise); any
other head takes the torch.func.vmap path. Both are pinned here on hand-sized examples.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import sksemiparam._mbpa
from sksemiparam import MbPAClassifier
from sksemiparam._base import _Float64Predictions
from sksemiparam.nn import adapt_and_predict, memory_kernel_weights
from sksemiparam.nn.mbpa import _adapt_with_vmap, linear_relu_layers

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# float64 throughout: the paths agree to ~1e-15; this is far below any real disagreement.
TOL = {"rtol": 1e-9, "atol": 1e-9}


def _per_query_reference(head, queries, keys, labels, weights, *, steps, lr, reg):
    """One query at a time: a fresh copy of the head, ``steps`` steps of torch.autograd on
    -sum_k w_k log p(v_k | h_k) + reg ||theta - theta_0||^2, then the query's log-probabilities."""
    theta0 = [p.detach().clone() for p in head.parameters()]
    out = []
    for i in range(queries.shape[0]):
        local = copy.deepcopy(head)
        params = list(local.parameters())
        for _ in range(steps):
            log_p = torch.log_softmax(local(keys[i]), dim=1)
            loss = -(weights[i] * log_p[torch.arange(keys.shape[1]), labels[i]]).sum()
            loss = loss + reg * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, theta0))
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= lr * g
        with torch.no_grad():
            out.append(torch.log_softmax(local(queries[i : i + 1]), dim=1)[0])
    return torch.stack(out)


def _head(key_dim, hidden, n_classes=3, *, bias=True, activation=nn.ReLU, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers, width = [], key_dim
        for h in hidden:
            layers += [nn.Linear(width, h, bias=bias), activation()]
            width = h
        layers.append(nn.Linear(width, n_classes, bias=bias))
        return nn.Sequential(*layers).double()


def _example(n, k, key_dim, n_classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(n, key_dim, generator=g, dtype=torch.float64)
    keys = queries[:, None, :] + 0.7 * torch.randn(n, k, key_dim, generator=g, dtype=torch.float64)
    labels = torch.randint(0, n_classes, (n, k), generator=g)
    weights = memory_kernel_weights((queries[:, None, :] - keys).square().sum(-1), 1e-3)
    return queries, keys, labels, weights


# (key_dim e, neighbours K, hidden widths, bias): K < e takes the low-rank first layer, K >= e the
# per-query one; () is a single linear layer, whose first layer is also its output layer.
CONFIGS = [
    (6, 3, (), True),
    (6, 3, (5,), True),
    (6, 3, (5, 4), True),
    (6, 3, (5,), False),
    (3, 5, (), True),
    (3, 5, (5,), True),
    (3, 5, (5, 4), False),
    (4, 4, (5,), True),
]


@pytest.mark.parametrize("key_dim, k, hidden, bias", CONFIGS)
@pytest.mark.parametrize("steps, lr, reg", [(0, 0.3, 0.2), (1, 0.3, 0.0), (4, 0.5, 0.3), (3, 0.2, 1.5)])
def test_linear_relu_adaptation_equals_per_query_autograd(key_dim, k, hidden, bias, steps, lr, reg):
    head = _head(key_dim, hidden, bias=bias)
    assert linear_relu_layers(head) is not None  # the closed-form path
    example = _example(5, k, key_dim)
    settings = {"steps": steps, "lr": lr, "reg": reg}
    got = adapt_and_predict(head, *example, **settings)
    expected = _per_query_reference(head, *example, **settings)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, **TOL)
    # The vmap path computes the same steps on the same head.
    torch.testing.assert_close(_adapt_with_vmap(head, *example, **settings), expected, **TOL)


def test_relu_exactly_at_zero_passes_no_gradient_as_in_autograd():
    # A zero key and zero biases: the first layer's pre-activations are exactly 0 there, where
    # autograd's ReLU passes no gradient.
    for k, key_dim in ((3, 6), (5, 3)):  # low-rank and per-query first layer
        head = _head(key_dim, (4,))
        with torch.no_grad():
            head[0].bias.zero_()
        queries, keys, labels, weights = _example(4, k, key_dim)
        keys[:, 0] = 0.0
        settings = {"steps": 3, "lr": 0.5, "reg": 0.1}
        got = adapt_and_predict(head, queries, keys, labels, weights, **settings)
        expected = _per_query_reference(head, queries, keys, labels, weights, **settings)
        torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("activation", [nn.Tanh, nn.GELU])
def test_other_heads_adapt_with_vmap_as_per_query_autograd(activation):
    head = _head(6, (5,), activation=activation)
    assert linear_relu_layers(head) is None
    example = _example(4, 3, 6)
    settings = {"steps": 3, "lr": 0.4, "reg": 0.1}
    got = adapt_and_predict(head, *example, **settings)
    torch.testing.assert_close(got, _per_query_reference(head, *example, **settings), **TOL)


def test_linear_relu_layers_recognises_only_linear_relu_stacks():
    assert linear_relu_layers(nn.Linear(3, 2)) is None  # not a Sequential
    assert linear_relu_layers(nn.Sequential(nn.Linear(3, 4), nn.ReLU())) is None  # ends in a ReLU
    assert linear_relu_layers(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2))) is None
    layers = linear_relu_layers(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    assert [layer.out_features for layer in layers] == [4, 2]


def test_the_head_is_untouched_and_float32_heads_adapt_in_their_precision():
    head = _head(6, (5,)).float()
    before = [p.detach().clone() for p in head.parameters()]
    queries, keys, labels, weights = (t.float() if t.is_floating_point() else t for t in _example(4, 3, 6))
    got = adapt_and_predict(head, queries, keys, labels, weights, steps=3, lr=0.3, reg=0.1)
    assert got.dtype == torch.float32
    assert all(torch.equal(p, p0) for p, p0 in zip(head.parameters(), before))
    expected = _per_query_reference(
        head.double(), queries.double(), keys.double(), labels, weights.double(), steps=3, lr=0.3, reg=0.1
    )
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        # pixel keys (64) and 8 neighbours: the low-rank first layer
        {"embedding": "identity", "head_layer_sizes": (16,), "n_neighbors": 8},
        # 8-dimensional keys and 16 neighbours: per-query first-layer weights; a linear head
        {"embedding_dim": 8, "head_layer_sizes": (), "n_neighbors": 16},
    ],
)
def test_estimator_predicts_the_per_query_reference_in_float64(params, digits, monkeypatch):
    X_train, X_test, y_train, _ = digits
    clf = MbPAClassifier(**params, adapt_steps=4, adapt_lr=0.1, adapt_reg=0.2, max_epochs=3, random_state=0)
    clf.fit(X_train[:300], y_train[:300])
    X = X_test[:12]
    with torch.no_grad(), _Float64Predictions():  # the estimator's own neighbours and weights
        q = clf.module_.embed(torch.from_numpy(X))
        _, ids = clf.index_.query(q, params["n_neighbors"])
        keys, labels, weights = clf._neighbours(q, ids)
    head = copy.deepcopy(clf.module_.head).double()
    expected = _per_query_reference(
        head, q.double(), keys.double(), labels, weights.double(), steps=4, lr=0.1, reg=0.2
    ).numpy()
    full = clf.predict_log_proba(X)
    np.testing.assert_allclose(full, expected, **TOL)
    # Batch invariance (test_batch_invariance.py's tolerance): a row alone, and one query per chunk.
    np.testing.assert_allclose(clf.predict_log_proba(X[5:6]), full[5:6], rtol=1e-12, atol=1e-13)
    monkeypatch.setattr(sksemiparam._mbpa, "_ADAPT_CHUNK_FLOATS", 1)
    np.testing.assert_allclose(clf.predict_log_proba(X), full, rtol=1e-12, atol=1e-13)
