"""Memory-based Parameter Adaptation (Sprechmann et al., 2018): network and per-query adaptation."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

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

    then log p(y | q, theta_q). Each query's theta_q is discarded afterwards; no Python loop over
    queries.

    A head that is a stack of ``nn.Linear`` layers with ``nn.ReLU`` between them (every head of
    ``MbPANet``) takes its steps in closed form, batched over the queries with hand-written
    gradients; the update of its first layer is then low rank (see ``_adapt_linear_relu``). Any
    other head is adapted with ``torch.func.vmap`` over per-query copies of its parameters. Both
    compute the same steps; the first computes without autograd (it is for prediction: its result
    carries no gradient back to the inputs).

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
    if steps == 0:  # theta_0: the parametric prediction, exactly
        return torch.log_softmax(head(queries), dim=1)
    layers = linear_relu_layers(head)
    if layers is None:
        return _adapt_with_vmap(head, queries, keys, labels, weights, steps=steps, lr=lr, reg=reg)
    return _adapt_linear_relu(layers, queries, keys, labels, weights, steps=steps, lr=lr, reg=reg)


def linear_relu_layers(head: nn.Module) -> list[nn.Linear] | None:
    """The linear layers of ``head`` when it is ``Linear (ReLU Linear)*`` in an ``nn.Sequential``
    (the form whose adaptation has a closed-form gradient), else None."""
    if not isinstance(head, nn.Sequential) or len(head) % 2 == 0:
        return None
    modules = list(head)
    linear, relu = modules[0::2], modules[1::2]
    if all(type(m) is nn.Linear for m in linear) and all(type(m) is nn.ReLU for m in relu):
        return linear
    return None


def adaptation_floats(head: nn.Module, n_neighbors: int, key_dim: int, steps: int) -> int:
    """About how many floats ``adapt_and_predict`` holds per query at once (to size chunks)."""
    layers = linear_relu_layers(head)
    if layers is None:  # vmap: per-query parameter copies, and what grad keeps of each step
        return sum(p.numel() for p in head.parameters()) * max(steps, 1)
    k = n_neighbors
    first, rest = layers[0], layers[1:]
    if k < key_dim:  # the low-rank first layer: Gram matrix, pre-activations, coordinates
        total = k * (k + 4 * first.out_features)
    else:  # its per-query weights, their gradient and update, its inputs and outputs
        total = 3 * first.weight.numel() + k * (key_dim + 4 * first.out_features)
    for layer in rest:
        total += 3 * layer.weight.numel() + 4 * k * layer.out_features
    return total + k * key_dim  # the keys in the compute dtype


def _adapt_with_vmap(head, queries, keys, labels, weights, *, steps, lr, reg):
    """adapt_and_predict for any head: ``torch.func.grad`` steps, ``vmap`` over the queries."""
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


@torch.no_grad()
def _adapt_linear_relu(layers, queries, keys, labels, weights, *, steps, lr, reg):
    """adapt_and_predict for ``Linear (ReLU Linear)*``: the same steps, gradients written out.

    Backpropagation through the stack is done by hand on (n, K, width) activations, with
    per-query weights (stored transposed, (n, in, out)) for every layer but possibly the first.
    The first layer's gradient is delta^T [h, 1] (delta: its pre-activations' gradient (K, out);
    [h, 1]: the keys with a 1 for the bias), and the pull-back's gradient 2 reg (W - W_0) stays in
    the same span, so W_t = W_0 + C_t^T [h, 1] with C_{t+1} = C_t - lr (delta_t + 2 reg C_t),
    C_0 = 0. Its pre-activations are then Z_0 + G C_t for the neighbours (G = [h, 1] [h, 1]^T,
    K x K) and z_0 + [q, 1] [h, 1]^T C_t for the query: a step costs O(K^2 out) instead of
    O(K e out). This form is used when K < e; otherwise the first layer keeps per-query weights
    like the others.
    """
    n, k, key_dim = keys.shape
    dtype = _compute_dtype(queries, keys, weights, *(p for layer in layers for p in layer.parameters()))
    queries, keys, weights = queries.to(dtype), keys.to(dtype), weights.to(dtype).unsqueeze(-1)
    # Each layer as (W^T (in, out), b): per-query W^T (n, in, out) keeps the products contiguous.
    theta0 = [(layer.weight.detach().to(dtype).mT, _detached(layer.bias, dtype)) for layer in layers]
    target = (labels[..., None] == torch.arange(layers[-1].out_features, device=labels.device)).to(dtype)
    low_rank = k < key_dim
    pre = None
    if low_rank:  # the first layer in the span of the neighbours' keys (and the bias's 1)
        (w1t, b1), theta0 = theta0[0], theta0[1:]
        one = float(b1 is not None)
        keys_pre = _linear(keys, w1t, b1)  # (n, K, out): Z_0
        gram = torch.matmul(keys, keys.mT) + one  # (n, K, K)
        query_pre = _linear(queries, w1t, b1)  # (n, out): z_0
        query_gram = torch.matmul(keys, queries.unsqueeze(-1)).mT + one  # (n, 1, K)
        coef = keys_pre.new_zeros(n, k, w1t.shape[1])  # C
    theta = theta0
    for _ in range(steps):
        if low_rank:
            pre = torch.baddbmm(keys_pre, gram, coef)
        inputs, logits = _forward_explicit(keys, pre, theta)
        # d/dlogits of -sum_k w_k log softmax(logits_k)[v_k]: w_k (softmax(logits_k) - e_{v_k})
        delta = _softmax(logits).sub_(target).mul_(weights)
        grads = []
        for i in reversed(range(len(theta))):
            wt, b = theta[i]
            grads.append((torch.matmul(inputs[i].mT, delta), None if b is None else delta.sum(1)))
            if i > 0 or low_rank:  # back through the ReLU before layer i, as autograd does it
                delta = torch.ops.aten.threshold_backward(torch.matmul(delta, wt.mT), inputs[i], 0)
        theta = [
            (_descend(wt, wt0, gwt, lr, reg), None if b is None else _descend(b, b0, gb, lr, reg))
            for (wt, b), (wt0, b0), (gwt, gb) in zip(theta, theta0, reversed(grads))
        ]
        if low_rank:  # C - lr (delta + 2 reg C), in place (C is ours)
            coef = coef.mul_(1 - 2 * lr * reg).add_(delta, alpha=-lr)
    if low_rank:
        pre = torch.baddbmm(query_pre.unsqueeze(1), query_gram, coef)
    _, logits = _forward_explicit(queries.unsqueeze(1), pre, theta)
    return torch.log_softmax(logits.squeeze(1), dim=-1)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The tensors' common dtype, or the wider one that a matrix product of them gives here: a
    TorchFunctionMode may widen products (sksemiparam's float64 predictions on the CPU), and the
    keys are then widened once instead of at every product. (Autocast's narrower one is ignored.)"""
    dtype = reduce(torch.promote_types, [t.dtype for t in tensors])
    probe = tensors[0].new_zeros(1, 1, dtype=dtype)
    return torch.promote_types(dtype, torch.matmul(probe, probe).dtype)


def _detached(p: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if p is None else p.detach().to(dtype)


def _linear(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x (n, m, in) @ W^T + b, with W^T (in, out) shared or (n, in, out) per query."""
    z = torch.matmul(x, wt)
    return z if b is None else z.add_(b.unsqueeze(-2))


def _softmax(z: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension (torch.softmax is several times slower over a few classes)."""
    e = (z - z.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


def _descend(p, p0, g, lr, reg):
    """One step on a parameter: p - lr (g + 2 reg (p - p0)), with ``g`` its loss gradient."""
    return torch.add(torch.lerp(p, p0, 2 * lr * reg), g, alpha=-lr)


def _forward_explicit(x, pre, theta):
    """Through linear layers theta, [(W^T (in, out) or (n, in, out), b (out,), (n, out) or None)],
    with a ReLU before each but the first: from x (n, m, in), or from ``pre``, pre-activations
    (n, m, width) of a layer before them (then every layer has its ReLU, applied in place). Returns
    each layer's input and the output."""
    inputs = []
    z = pre
    for wt, b in theta:
        a = x if z is None else z.relu_()
        inputs.append(a)
        z = _linear(a, wt, b)
    return inputs, z


def memory_vote(labels: torch.Tensor, weights: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Kernel-weighted vote of the neighbours' labels: (n, K) -> class distribution (n, n_classes)."""
    return torch.einsum("nk,nkc->nc", weights, F.one_hot(labels, n_classes).to(weights.dtype))
