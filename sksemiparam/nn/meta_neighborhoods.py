"""Meta-Neighborhoods (Shan & Oliva): a learned dictionary of neighbours tunes f_phi per query."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .kernels import full_precision

SIMILARITIES = ("euclidean", "cosine")


@full_precision
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
        """f_{phi_x}(z) for every row, each with its own inner steps.

        ``keys``/``values`` are the whole dictionary (S, .) or each row's entries (n, k, .).
        One step takes the structured path (:meth:`one_step_outputs`); more steps the generic
        per-query path (:meth:`vmapped_outputs`). Both compute the same function.
        """
        if self.n_inner_steps == 1:
            return self.one_step_outputs(z, omega, keys, values)
        return self.vmapped_outputs(z, omega, keys, values)

    def _inner_params(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """phi where the inner gradient is evaluated: detached under ``first_order``."""
        return {n: p.detach() if self.first_order else p for n, p in module.named_parameters()}

    def one_step_outputs(
        self, z: torch.Tensor, omega: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """One inner step without a per-query copy of the hidden layers (the fast path).

        The inner gradient is linear in omega: for a hidden ``Linear`` layer with inputs a_j and
        pre-activation gradients delta_j on the entries, grad_W = sum_j omega_ij delta_j a_j^T, so
        (W - alpha grad_W) h_i = W h_i - alpha sum_j omega_ij delta_j (a_j . h_i): two matrix
        products of n x S x width instead of n copies of W (a diagonal alpha needs the per-query
        gradient, formed by one einsum). The last layer (any module, e.g. ``CosineLinear``) is
        small: its per-entry gradients are formed with ``torch.func`` and mixed by omega.
        """
        layers = list(self.head)
        hidden, final = layers[:-1:2], layers[-1]
        per_row = keys.ndim == 3
        n, m = omega.shape
        flat_keys, flat_values = keys.reshape(-1, keys.shape[-1]), values.reshape(-1, values.shape[-1])
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # The entries through the hidden layers, at phi (detached under first_order).
            a = flat_keys if flat_keys.requires_grad else flat_keys.detach().requires_grad_()
            inputs, pres = [], []
            for layer in hidden:
                w = self._inner_params(layer)
                inputs.append(a)
                pres.append(F.linear(a, w["weight"], w["bias"]))
                a = torch.relu(pres[-1])
            final_phi = self._inner_params(final)

            def entry_loss(params, a_j, v_j):
                return self._entry_loss(functional_call(final, params, (a_j[None],)), v_j[None])[0]

            final_grads = vmap(grad(entry_loss), in_dims=(None, 0, 0))(final_phi, a, flat_values)
            deltas = []
            if hidden:
                total = self._entry_loss(functional_call(final, final_phi, (a,)), flat_values).sum()
                deltas = torch.autograd.grad(total, pres, create_graph=create_graph)

        def rows(t):  # entries as (m, .) shared by all rows, or (n, m, .) per row
            return t.reshape(n, m, -1) if per_row else t

        mix = "nm,nm...->n..." if per_row else "nm,m...->n..."
        h = z
        for index, layer, a_in, delta in zip(range(0, len(layers), 2), hidden, inputs, deltas):
            a_in, delta = rows(a_in), rows(delta)
            rate_w, rate_b = self._rate(f"{index}.weight"), self._rate(f"{index}.bias")
            grad_b = torch.einsum(mix, omega, delta)
            if isinstance(self.inner_lr, nn.ParameterDict):  # per-query gradient of W, then W_i h_i
                per_query = "nm,nmo,nmi->noi" if per_row else "nm,mo,mi->noi"
                grad_w = torch.einsum(per_query, omega, delta, a_in)
                pre = torch.einsum("noi,ni->no", layer.weight - rate_w * grad_w, h)
            else:  # W h_i - alpha sum_j omega_ij delta_j (a_j . h_i)
                dots = torch.einsum("ni,nmi->nm", h, a_in) if per_row else h @ a_in.T
                pre = h @ layer.weight.T - rate_w * torch.einsum(mix, omega * dots, delta)
            h = torch.relu(pre + layer.bias - rate_b * grad_b)
        params = {}
        for name, p in final.named_parameters():
            g = final_grads[name].reshape(n, m, *p.shape) if per_row else final_grads[name]
            params[name] = p - self._rate(f"{len(layers) - 1}.{name}") * torch.einsum(mix, omega, g)
        return vmap(lambda p, h_i: functional_call(final, p, (h_i[None],))[0])(params, h)

    def vmapped_outputs(
        self, z: torch.Tensor, omega: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """f_{phi_x}(z) with a functional copy of phi per query (any number of steps, vmapped)."""
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
