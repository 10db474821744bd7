"""Memory-based Parameter Adaptation (Sprechmann et al., 2018): network and per-query adaptation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


class MbPANet(nn.Module):
    """Embedding network f_gamma and output network g_theta, p(y | x) = softmax(g_theta(f_gamma(x))).

    Parameters
    ----------
    embedding : nn.Module
        f_gamma, mapping (n, in_features) to (n, embedding_dim).
    embedding_dim : int
    n_classes : int
    head_layer_sizes : sequence of int
        Hidden widths of g_theta (ReLU); ``()`` is a single linear layer.
    """

    def __init__(
        self,
        *,
        embedding: nn.Module,
        embedding_dim: int,
        n_classes: int,
        head_layer_sizes: Sequence[int] = (),
    ) -> None:
        if n_classes < 2:
            raise ValueError(f"`n_classes` must be >= 2, got {n_classes}")
        super().__init__()
        self.embedding = embedding
        self.n_classes = n_classes
        layers: list[nn.Module] = []
        width = embedding_dim
        for h in head_layer_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.head = nn.Sequential(*layers)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the parametric model (no adaptation)."""
        return torch.log_softmax(self.head(self.embed(x)), dim=1)


def memory_kernel_weights(sq_dist: torch.Tensor, epsilon: float) -> torch.Tensor:
    """MbPA's kernel 1 / (epsilon + ||h - q||^2), normalised over each row's neighbours. (n, K)."""
    w = 1.0 / (epsilon + sq_dist)
    return w / w.sum(1, keepdim=True)


def adapt_and_predict(
    head: nn.Module,
    queries: torch.Tensor,
    keys: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    steps: int,
    lr: float,
    reg: float,
) -> torch.Tensor:
    """Per-query local adaptation of the output network, all queries in parallel (eq. 1).

    For each query q with retrieved neighbours (h_k, v_k) and weights w_k, starting from theta_0
    (``head``'s parameters), ``steps`` gradient steps of rate ``lr`` on

        L(theta) = - sum_k w_k log p(v_k | h_k, theta) + reg * ||theta - theta_0||^2,

    then log p(y | q, theta_q). Each query's theta_q is discarded afterwards. ``torch.func.vmap``
    over per-query parameter copies; no Python loop over queries.

    Parameters
    ----------
    head : nn.Module
        g_theta, mapping (m, e) to logits (m, n_classes).
    queries : Tensor (n, e)
    keys : Tensor (n, K, e)
        Each query's neighbours' keys.
    labels : LongTensor (n, K)
    weights : Tensor (n, K)
        Kernel weights, each row summing to 1.
    steps, lr, reg
        Number of steps, step size and pull-back strength.

    Returns
    -------
    Tensor (n, n_classes): log-probabilities under the adapted parameters.
    """
    theta0 = {name: p.detach() for name, p in head.named_parameters()}

    def local_loss(theta, k, v, w):
        log_p = torch.log_softmax(functional_call(head, theta, (k,)), dim=1)
        nll = -(w * log_p.gather(1, v[:, None]).squeeze(1)).sum()
        pull = sum((theta[name] - theta0[name]).square().sum() for name in theta)
        return nll + reg * pull

    def one_query(q, k, v, w):
        theta = theta0
        for _ in range(steps):
            g = grad(local_loss)(theta, k, v, w)
            theta = {name: theta[name] - lr * g[name] for name in theta}
        return torch.log_softmax(functional_call(head, theta, (q[None],)), dim=1)[0]

    return vmap(one_query)(queries, keys, labels, weights)


def memory_vote(labels: torch.Tensor, weights: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Kernel-weighted vote of the neighbours' labels: (n, K) -> class distribution (n, n_classes)."""
    return torch.einsum("nk,nkc->nc", weights, F.one_hot(labels, n_classes).to(weights.dtype))
