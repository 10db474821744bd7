"""Meta-Neighborhoods (Shan & Oliva): a learned dictionary of neighbours tunes f_phi per query."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

SIMILARITIES = ("euclidean", "cosine")


def dictionary_attention(z: torch.Tensor, keys: torch.Tensor, gamma: float, similarity: str) -> torch.Tensor:
    """omega(z, k_j): softmax over the S entries of -gamma ||z - k_j|| (eq. 11) or gamma cos(z, k_j) (eq. 12).

    Parameters
    ----------
    z : Tensor (n, e)
    keys : Tensor (S, e), shared by all rows, or (n, k, e), each row's own (retrieved) entries

    Returns
    -------
    Tensor (n, S) or (n, k), rows summing to 1.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"`similarity` must be one of {SIMILARITIES}, got {similarity!r}")
    if keys.ndim == 3:  # per-row entries
        if similarity == "euclidean":
            scores = -gamma * (z[:, None, :] - keys).square().sum(-1).clamp_min(1e-12).sqrt()
        else:
            scores = gamma * (F.normalize(z, dim=1)[:, None, :] * F.normalize(keys, dim=-1)).sum(-1)
    elif similarity == "euclidean":
        sq = (z * z).sum(1, keepdim=True) + (keys * keys).sum(1)[None, :] - 2.0 * z @ keys.T
        scores = -gamma * sq.clamp_min(1e-12).sqrt()
    else:
        scores = gamma * F.normalize(z, dim=1) @ F.normalize(keys, dim=1).T
    return torch.softmax(scores, dim=1)


class CosineLinear(nn.Module):
    """Logits scale * cos(z, w_c) for each class c, with a learnable scale (the paper's eq. 15).

    Parameters
    ----------
    in_features, out_features : int
    scale_init : float
        Initial tau, which stretches cosines in [-1, 1] to a range softmax can use.
    """

    def __init__(self, in_features: int, out_features: int, scale_init: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features**0.5)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(n, in_features) -> (n, out_features)."""
        return self.scale * F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).T


class MetaNeighborhoodsNet(nn.Module):
    """Embedding mu, dictionary M = {(k_j, v_j)}, output network f_phi and its per-query inner step.

    For a query x with z = mu(x) and attention omega_j = omega(z, k_j), ``n_inner_steps`` steps
    phi_x = phi - alpha grad_phi sum_j omega_j L(f_phi(k_j), v_j) (eq. 8-10), then f_{phi_x}(z).

    Parameters
    ----------
    embedding : nn.Module
        mu, (n, in_features) -> (n, embedding_dim); ``nn.Identity`` puts the keys in input space.
    embedding_dim : int
    n_outputs : int
    n_entries : int
        S, the dictionary size.
    head_layer_sizes : sequence of int
        Hidden widths of f_phi (ReLU).
    task : {"regression", "classification"}
        L is the squared error, or the cross-entropy to the class distribution softmax(v_j).
    value_range : (float, float)
        Regression: values start uniform in this range (the standardised target range).
    gamma : float
    similarity : {"euclidean", "cosine"}
    n_inner_steps : int
    inner_lr : {"scalar", "diagonal"}
        alpha is one learnable scalar, or one learnable rate per parameter entry of f_phi.
    inner_lr_init : float
    first_order : bool
        Treat phi inside the inner gradient as a constant (no second derivatives in phi); the
        dictionary and alpha still receive gradients through the inner step.
    cosine_output : bool
        The last layer of f_phi is a ``CosineLinear`` (classification, the paper's eq. 15).
    auxiliary_head : bool
        Add the auxiliary classifier xi on the embedding (co-training, eq. 14), never adapted.
    """

    def __init__(
        self,
        *,
        embedding: nn.Module,
        embedding_dim: int,
        n_outputs: int,
        n_entries: int,
        head_layer_sizes: Sequence[int] = (128, 128, 128),
        task: str = "regression",
        value_range: tuple[float, float] = (-1.0, 1.0),
        gamma: float = 10.0,
        similarity: str = "euclidean",
        n_inner_steps: int = 1,
        inner_lr: str = "scalar",
        inner_lr_init: float = 0.1,
        first_order: bool = False,
        cosine_output: bool = False,
        auxiliary_head: bool = False,
    ) -> None:
        if task not in ("regression", "classification"):
            raise ValueError(f"`task` must be 'regression' or 'classification', got {task!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"`similarity` must be one of {SIMILARITIES}, got {similarity!r}")
        if inner_lr not in ("scalar", "diagonal"):
            raise ValueError(f"`inner_lr` must be 'scalar' or 'diagonal', got {inner_lr!r}")
        super().__init__()
        self.embedding = embedding
        self.task, self.gamma, self.similarity = task, float(gamma), similarity
        self.n_inner_steps, self.first_order = n_inner_steps, first_order
        # NOTE[paper]: keys ~ N(0, 0.1); regression values uniform over the (standardised) target
        # range; classification values are logits ~ N(0, 0.1).
        self.keys = nn.Parameter(0.1 * torch.randn(n_entries, embedding_dim))
        if task == "regression":
            low, high = value_range
            self.values = nn.Parameter(low + (high - low) * torch.rand(n_entries, n_outputs))
        else:
            self.values = nn.Parameter(0.1 * torch.randn(n_entries, n_outputs))
        layers: list[nn.Module] = []
        width = embedding_dim
        for h in head_layer_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(CosineLinear(width, n_outputs) if cosine_output else nn.Linear(width, n_outputs))
        self.head = nn.Sequential(*layers)
        self.auxiliary = CosineLinear(embedding_dim, n_outputs) if auxiliary_head else None
        if inner_lr == "scalar":
            self.inner_lr = nn.Parameter(torch.tensor(float(inner_lr_init)))
        else:
            self.inner_lr = nn.ParameterDict(
                {n.replace(".", "_"): nn.Parameter(torch.full_like(p, float(inner_lr_init)))
                 for n, p in self.head.named_parameters()}
            )  # fmt: skip

    def _entry_loss(self, outputs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """L(f(k_j), v_j) for every entry: (m, n_outputs) -> (m,)."""
        if self.task == "regression":
            return (outputs - values).square().sum(1)
        return -(torch.softmax(values, dim=1) * torch.log_softmax(outputs, dim=1)).sum(1)

    def _rate(self, name: str):
        if isinstance(self.inner_lr, nn.ParameterDict):
            return self.inner_lr[name.replace(".", "_")]
        return self.inner_lr

    def adapted_outputs(
        self, z: torch.Tensor, omega: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """f_{phi_x}(z) for every row, each with its own inner steps (vectorised over rows).

        ``keys``/``values`` are the whole dictionary (S, .) or each row's entries (n, k, .).
        """
        phi = dict(self.head.named_parameters())

        def inner_loss(params, w, k, v):
            return (w * self._entry_loss(functional_call(self.head, params, (k,)), v)).sum()

        def one_query(z_i, w_i, k_i, v_i):
            params = phi
            for _ in range(self.n_inner_steps):
                point = {n: p.detach() for n, p in params.items()} if self.first_order else params
                g = grad(inner_loss)(point, w_i, k_i, v_i)
                params = {n: params[n] - self._rate(n) * g[n] for n in params}
            return functional_call(self.head, params, (z_i[None],))[0]

        per_row = 0 if keys.ndim == 3 else None
        return vmap(one_query, in_dims=(0, 0, per_row, per_row))(z, omega, keys, values)

    def outputs(self, z: torch.Tensor, neighbor_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs for embeddings z; with ``neighbor_ids`` (n, k), attention only over those entries.

        The retrieved entries are gathered from the dictionary with autograd, so they still learn.
        """
        if self.n_inner_steps == 0:
            return self.head(z)
        keys, values = self.keys, self.values
        if neighbor_ids is not None:
            keys, values = keys[neighbor_ids], values[neighbor_ids]
        omega = dictionary_attention(z, keys, self.gamma, self.similarity)
        return self.adapted_outputs(z, omega, keys, values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (n, n_outputs) with full attention: regression values, or classification logits."""
        return self.outputs(self.embedding(x))
