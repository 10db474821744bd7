"""Meta-Neighborhoods (Shan & Oliva): a learned dictionary of neighbours tunes f_phi per query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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


# Rows per chunk of the per-query inner steps: at most this many elements in a per-query tensor
# (n x width x S): 2**24 is 128 MB in float64, a batch of 128 rows with S = 1000 and 128 units.
_CHUNK_ELEMENTS = 2**24
# F.normalize's eps: x / max(||x||, eps).
_NORM_EPS = 1e-12


def _normalized(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F.normalize(x, dim=dim)``, with the clamped norm and where it was not clamped (for the backward)."""
    norm = x.norm(dim=dim, keepdim=True)
    clamped = norm.clamp_min(_NORM_EPS)
    return x / clamped, clamped, norm >= _NORM_EPS


def _normalized_backward(grad, unit, clamped, unclamped, dim: int) -> torch.Tensor:
    """The gradient in x of ``F.normalize(x, dim=dim)`` from the gradient in its output, as autograd's."""
    return (grad - unclamped * (unit * grad).sum(dim, keepdim=True) * unit) / clamped


# The entries as columns: (features, m) shared by all queries, or (n, features, m) per query or row.
def _mix(omega: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_j omega_ij x_j for every query i: omega (n, m), x (d, m) or (n, d, m) -> (n, d)."""
    if x.ndim == 2:
        return omega @ x.T
    return (x @ omega.unsqueeze(-1)).squeeze(-1)


def _mix_outer(omega: torch.Tensor, d: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """sum_j omega_ij d_j a_j^T for every query i, entries shared: d (p, m), a (q, m) -> (n, p, q).

    One matrix product of omega with the entries' outer products (p q, m), whatever n.
    """
    outer = (d.unsqueeze(1) * a.unsqueeze(0)).flatten(0, 1)
    return (omega @ outer.T).unflatten(1, (d.shape[0], a.shape[0]))


def _dots(h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """h_i . a_j for every query i and entry j: h (n, q), a (q, m) or (n, q, m) -> (n, m)."""
    if a.ndim == 2:
        return h @ a
    return (h.unsqueeze(-2) @ a).squeeze(-2)


def _detached(layers: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{n: p.detach() for n, p in layer.items()} for layer in layers]


class _Entries(NamedTuple):
    """The dictionary entries through f, by hand, as columns: each layer's input a_l, the loss
    gradient at each hidden layer's pre-activation and at f's output, and a ``CosineLinear`` output
    layer's pieces (the normalised inputs and weight, and the weight times the scale)."""

    inputs: list[torch.Tensor]
    deltas: list[torch.Tensor]
    grad_out: torch.Tensor
    cosine: tuple | None


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
        """f_{phi_x}(z) for every row, each with its own inner steps (the fast, exact path).

        ``keys``/``values`` are the whole dictionary (S, .) or each row's entries (n, k, .).
        The entries' losses are differentiated by hand (the forward and backward of f written
        out), so training backpropagates through one ordinary graph, with no second-order autograd
        call. The first step's entry terms do not depend on the query: they are computed once and
        mixed by omega. Each later step forms the queries' parameters (one product with omega per
        layer) and runs the entries through each query's own f with batched products. The last
        step with a scalar rate never forms a query's adapted weights (:meth:`_low_rank_outputs`).
        Rows with their own copies of the entries go in chunks, which bounds the memory of a large
        prediction. :meth:`reference_outputs` computes the same function.
        """
        keys, values = keys.transpose(-1, -2), values.transpose(-1, -2)  # entries as columns
        targets = values if self.task == "regression" else torch.softmax(values, dim=-2)
        params = self._head_params()
        point = self._head_params(detach=True) if self.first_order else params
        per_row = keys.ndim == 3  # each row's own entries
        entries = None if per_row else self._entry_pass(point, keys, targets)
        chunk = self._rows_per_chunk(keys.shape[-1], per_row) or max(z.shape[0], 1)
        outputs = []
        for s in range(0, max(z.shape[0], 1), chunk):  # no rows: one empty chunk
            rows = slice(s, s + chunk)
            if per_row:
                keys_s, targets_s = keys[rows], targets[rows]
            else:
                keys_s, targets_s = keys, targets
            outputs.append(self._adapt(z[rows], omega[rows], keys_s, targets_s, params, point, entries))
        return torch.cat(outputs)

    def _rows_per_chunk(self, n_entries: int, per_row: bool) -> int | None:
        """Rows per chunk where the steps hold per-query tensors (n x width x S, or weights)."""
        if not (per_row or self.n_inner_steps > 1 or isinstance(self.inner_lr, nn.ParameterDict)):
            return None
        widths = [self.head[i].weight.shape[0] for i in self._param_layers]
        widest = max([n_entries * w for w in widths] + [p.numel() for p in self.head.parameters()])
        return max(1, _CHUNK_ELEMENTS // widest)

    def _adapt(self, z, omega, keys, targets, params, point, entries: _Entries | None) -> torch.Tensor:
        """The inner steps of the rows z, from the entries at phi when given (shared)."""
        if entries is None:
            entries = self._entry_pass(point, keys, targets)
        for _ in range(1, self.n_inner_steps):
            params = self._inner_update(params, self._inner_grads(entries, omega, point))
            point = _detached(params) if self.first_order else params
            entries = self._entry_pass(point, keys, targets)
        if not isinstance(self.inner_lr, nn.ParameterDict):  # the last step: no query's adapted weights
            return self._low_rank_outputs(z, omega, entries, params, point)
        params = self._inner_update(params, self._inner_grads(entries, omega, point))
        return self._head_forward(params, z.unsqueeze(-1))[1].squeeze(-1)

    @property
    def _param_layers(self) -> range:
        """Positions of f's layers with parameters: Linear, ReLU, ..., Linear, ReLU, output layer."""
        return range(0, len(self.head), 2)

    def _head_params(self, detach: bool = False) -> list[dict[str, torch.Tensor]]:
        """phi, layer by layer; detached for the point of a first-order inner gradient."""
        layers = [dict(self.head[i].named_parameters()) for i in self._param_layers]
        return _detached(layers) if detach else layers

    @staticmethod
    def _head_forward(layers, x):
        """f with ``layers`` (shared, or per query with a leading n) on the columns of x (..., in, m).

        Returns every layer's input, the outputs (..., n_outputs, m) and, for a ``CosineLinear``
        output layer, what its backward needs.
        """
        inputs = []
        for p in layers[:-1]:
            inputs.append(x)
            x = torch.relu(p["weight"] @ x + p["bias"].unsqueeze(-1))
        inputs.append(x)
        out = layers[-1]
        if "scale" not in out:
            return inputs, out["weight"] @ x + out["bias"].unsqueeze(-1), None
        unit_x, unit_w = _normalized(x, -2), _normalized(out["weight"], -1)
        scaled = out["scale"][..., None, None] * unit_w[0]  # scale the weight (C x in), not the logits
        return inputs, scaled @ unit_x[0], (unit_x, unit_w, scaled)

    def _entry_pass(self, layers, keys, targets) -> _Entries:
        """Forward and backward of L(f(k_j), v_j) on every entry (columns), by hand, omega not applied.

        ``targets``: the values (regression) or the class distributions softmax(v_j), as columns.
        """
        inputs, outputs, cosine = self._head_forward(layers, keys)
        if self.task == "regression":  # d/df (f - v)^2
            grad_out = 2.0 * (outputs - targets)
        else:  # d/df of -sum_c t_c log_softmax(f)_c (sum_c t_c = 1)
            grad_out = torch.softmax(outputs, dim=-2) - targets
        deltas: list[torch.Tensor] = []
        if len(layers) > 1:
            out = layers[-1]
            if cosine is None:
                grad = out["weight"].transpose(-1, -2) @ grad_out
            else:
                unit_x, _, scaled = cosine
                grad = _normalized_backward(scaled.transpose(-1, -2) @ grad_out, *unit_x, dim=-2)
            for index in range(len(layers) - 2, -1, -1):
                deltas.insert(0, grad.masked_fill(inputs[index + 1] <= 0, 0.0))  # through the ReLU
                if index:
                    grad = layers[index]["weight"].transpose(-1, -2) @ deltas[0]
        return _Entries(inputs, deltas, grad_out, cosine)

    def _inner_grads(self, entries: _Entries, omega, layers) -> list[dict[str, torch.Tensor]]:
        """Each query's inner gradient sum_j omega_ij grad_phi L_j, per parameter (n, *shape).

        Entries shared by all queries: one matrix product of omega with the entries' terms per
        parameter, whatever n (no (n, width, S) intermediate, which is large at prediction). Entries
        per query (later steps) or per row: the omega-weighted gradients, then batched products.
        """
        shared = entries.grad_out.ndim == 2
        grads = []
        for a, delta in zip(entries.inputs, entries.deltas + [entries.grad_out]):
            if shared:
                grads.append({"weight": _mix_outer(omega, delta, a), "bias": omega @ delta.T})
            else:
                weighted = omega.unsqueeze(-2) * delta
                grads.append({"weight": weighted @ a.transpose(-1, -2), "bias": weighted.sum(-1)})
        if entries.cosine is not None:
            grads[-1] = self._cosine_grads(entries, omega, layers[-1])
        return grads

    @staticmethod
    def _cosine_grads(entries: _Entries, omega, out) -> dict[str, torch.Tensor]:
        """The inner gradient of a ``CosineLinear`` output layer: its weight (through the
        normalisation) and its scale, sum_j omega_j e_j . (W_unit x_unit_j) = sum(W_unit * mixed)."""
        (unit_x, _, _), unit_w, _ = entries.cosine
        grad_out = entries.grad_out
        if grad_out.ndim == 2:  # shared entries
            mixed = _mix_outer(omega, grad_out, unit_x)
        else:
            mixed = (omega.unsqueeze(-2) * grad_out) @ unit_x.transpose(-1, -2)
        weight = _normalized_backward(out["scale"][..., None, None] * mixed, *unit_w, dim=-1)
        return {"weight": weight, "scale": (mixed * unit_w[0]).sum((-2, -1))}

    def _inner_update(self, layers, grads) -> list[dict[str, torch.Tensor]]:
        """phi - alpha grad, layer by layer (per query where the gradients carry a leading n)."""
        return [
            {n: p - self._rate(f"{i}.{n}") * g[n] for n, p in layer.items()}
            for i, layer, g in zip(self._param_layers, layers, grads)
        ]

    def _low_rank_outputs(self, z, omega, entries: _Entries, params, point) -> torch.Tensor:
        """The last step with a scalar alpha, without forming any query's adapted Linear weights.

        The inner gradient is linear in omega: for a Linear layer with inputs a_j and output
        gradients delta_j on the entries, grad_W = sum_j omega_ij delta_j a_j^T, so
        (W - alpha grad_W) h_i + b - alpha grad_b = W h_i + b - alpha sum_j omega_ij (a_j . h_i + 1)
        delta_j: two products of n x S x width per layer instead of n x S x width^2 (the entries
        shared by all queries after one step, each query's own after more). A ``CosineLinear``
        output layer needs the norms of its adapted rows, so its adapted weight is formed.
        ``params``: phi (one step) or each query's parameters before this step.
        """
        # phi itself goes through the modules (hooks, autocast as for any layer); else each query's own
        modules = [self.head[i] if params[0]["weight"].ndim == 2 else None for i in self._param_layers]
        deltas, last = entries.deltas + [entries.grad_out], len(params) - 1
        h = z
        for index in range(last + (entries.cosine is None)):  # the Linear layers
            a, delta = entries.inputs[index], deltas[index]
            h = self._low_rank_linear(h, omega, a, delta, params[index], self.inner_lr, modules[index])
            h = torch.relu(h) if index < last else h
        if entries.cosine is None:
            return h
        grads = self._cosine_grads(entries, omega, point[-1])
        adapted = {n: p - self.inner_lr * grads[n] for n, p in params[-1].items()}
        return self._head_forward([adapted], h.unsqueeze(-1))[1].squeeze(-1)

    @staticmethod
    def _low_rank_linear(h, omega, a, delta, p, rate, layer: nn.Linear | None) -> torch.Tensor:
        """(W - rate grad_W) h + b - rate grad_b for the rows h (n, in), grad_W never formed.

        ``p``: W and b, shared (the module ``layer`` itself) or per query (n, out, in) and (n, out).
        """
        base = layer(h) if layer is not None else (p["weight"] @ h.unsqueeze(-1)).squeeze(-1) + p["bias"]
        return base - rate * _mix(omega * (_dots(h, a) + 1.0), delta)

    def reference_outputs(
        self, z: torch.Tensor, omega: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """f_{phi_x}(z) the straightforward way: a functional copy of phi per query, its inner
        gradients by ``torch.func.grad`` (second order through autograd), vmapped over the queries.
        The definition :meth:`adapted_outputs` is tested against; the estimators do not use it."""
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
