"""Nearest-neighbour Gaussian kernels (Meyer, Harwood & Drummond): a kernel vote over stored centres."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .kernels import full_precision

# NOTE[paper]: eq. (7) gives 0 to a class no neighbour votes for; here such a class keeps this
# share of the probability mass relative to the vote total (the vote is mixed with a uniform
# floor), so log-probabilities and the loss's gradient stay finite.
VOTE_FLOOR = 1e-6


def gaussian_kernel_log_weights(
    sq_dist: torch.Tensor, sigma: torch.Tensor | float, log_importance: torch.Tensor | None = None
) -> torch.Tensor:
    """log(w_i k(z, c_i)) with k(z, c) = exp(-||z - c||^2 / (2 sigma^2)) (eq. 5), unnormalised.

    Parameters
    ----------
    sq_dist : Tensor (n, k)
        Squared distances from each query to its neighbours; ``inf`` masks a neighbour out.
    sigma : float or 0-d Tensor
        Kernel width.
    log_importance : Tensor (n, k), optional
        log w_i of each neighbour; None: all w_i = 1.
    """
    scores = -sq_dist / (2.0 * torch.as_tensor(sigma, dtype=sq_dist.dtype, device=sq_dist.device) ** 2)
    return scores if log_importance is None else scores + log_importance


def kernel_vote_log_proba(
    log_weights: torch.Tensor, neighbor_labels: torch.Tensor, n_classes: int, floor: float = VOTE_FLOOR
) -> torch.Tensor:
    """Log of eq. (7): p_c = sum_{i: y_i = c} w_i k_i / sum_i w_i k_i, over each query's neighbours.

    The weights are shifted by each row's maximum before exponentiating, so kernels that would
    underflow in float32 still vote. The vote is mixed with a uniform floor,
    p_c = (vote_c + floor) / (1 + n_classes floor), which keeps a class no neighbour votes for at a
    finite log-probability (and a finite gradient).

    Parameters
    ----------
    log_weights : Tensor (n, k)
        log(w_i k(z, c_i)), ``-inf`` for masked neighbours.
    neighbor_labels : LongTensor (n, k), or (k,) when every query has the same neighbours; or soft
        targets, float (n, k, n_classes) or (k, n_classes), each row a class distribution (the
        Impostor Network's redistributed labels)
    n_classes : int

    Returns
    -------
    Tensor (n, n_classes) of log-probabilities (rows sum to 1 in probability).
    """
    top = log_weights.max(dim=1, keepdim=True).values.detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # a row with every neighbour masked
    w = torch.exp(log_weights - top)
    if neighbor_labels.is_floating_point():
        targets = neighbor_labels.to(w.dtype)
    else:
        targets = torch.nn.functional.one_hot(neighbor_labels, n_classes).to(w.dtype)
    votes = w @ targets if targets.ndim == 2 else torch.einsum("nk,nkc->nc", w, targets)
    total = w.sum(1, keepdim=True)
    share = votes / total.clamp_min(torch.finfo(w.dtype).tiny)
    share = torch.where(total > 0, share, torch.full_like(share, 1.0 / n_classes))  # nobody votes: uniform
    return torch.log(share + floor) - math.log1p(n_classes * floor)


class _SharedCandidateVote(torch.autograd.Function):
    """``kernel_vote_log_proba`` of eq. (5)'s Gaussian kernel over candidates shared by every query
    (the sampled training mode and the dense vote), with a hand-written backward.

    Autograd through the composed version stores and revisits about ten (n, m) intermediates and
    runs some twenty-five operators each way; here the forward works in place on one (n, m) buffer
    and the backward makes one (n, m) pass and three matrix products. Same values and gradients
    (to float rounding) except where a squared distance rounds below 0 (a near-duplicate
    candidate), clamped to 0 as before but not held at a zero gradient: the gradient there is
    proportional to z - c, itself ~0.
    """

    @staticmethod
    def forward(ctx, z, centers, log_importance, sigma, targets, masked, floor, grad_enabled):
        n_classes = targets.shape[1]
        a = -0.5 / sigma.to(z.dtype) ** 2
        sq = torch.addmm((centers * centers).sum(1)[None, :], z, centers.T, alpha=-2.0)
        sq.add_((z * z).sum(1, keepdim=True)).clamp_min_(0.0)
        keep_sq = grad_enabled and ctx.needs_input_grad[3]  # (needs_input_grad ignores no_grad)
        scores = (sq.clone() if keep_sq else sq).mul_(a).add_(log_importance[None, :])
        scores.masked_fill_(masked, float("-inf"))
        top = scores.amax(1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # every candidate masked
        w = scores.sub_(top).exp_()
        votes = w @ targets
        total = w.sum(1, keepdim=True)
        share = votes.div_(total.clamp_min(torch.finfo(w.dtype).tiny))
        share = torch.where(total > 0, share, torch.full_like(share, 1.0 / n_classes))  # uniform
        ctx.save_for_backward(z, centers, targets, w, total, share, a, sq if keep_sq else None)
        ctx.floor, ctx.sigma_dtype = floor, sigma.dtype
        return torch.log(share + floor) - math.log1p(n_classes * floor)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        z, centers, targets, w, total, share, a, sq = ctx.saved_tensors
        # log(share + floor):  dL/dshare = g / (share + floor), 0 where nobody votes (constant).
        g = torch.where(total > 0, grad / (share + ctx.floor), torch.zeros_like(grad))
        # share = (w @ T) / sum(w):  dL/dw_ij = (g_i . T_j - g_i . share_i) / total_i; w = exp(s - top)
        # (the max shift leaves share unchanged):  dL/ds_ij = w_ij dL/dw_ij.
        m = torch.addmm(-(g * share).sum(1, keepdim=True), g, targets.T)
        m.mul_(w).div_(total.clamp_min(torch.finfo(w.dtype).tiny))
        needs = ctx.needs_input_grad
        grad_importance = m.sum(0) if needs[2] else None
        # s = a sq + log w_i with a = -1 / (2 sigma^2):  dL/dsigma = sum(dL/ds * sq) da/dsigma,
        # da/dsigma = -2a / sigma.
        grad_sigma = None
        if needs[3]:
            sigma = (-0.5 / a).sqrt()
            grad_sigma = ((m * sq).sum() * (-2.0 * a / sigma)).to(ctx.sigma_dtype)
        m.mul_(a)  # dL/dsq
        # sq_ij = |z_i - c_j|^2:  dL/dz = 2 (rowsum(m) z - m c), dL/dc = 2 (colsum(m) c - m^T z).
        grad_z = 2.0 * (m.sum(1, keepdim=True) * z - m @ centers) if needs[0] else None
        grad_c = 2.0 * (m.sum(0)[:, None] * centers - m.T @ z) if needs[1] else None
        return grad_z, grad_c, grad_importance, grad_sigma, None, None, None, None


@full_precision
def _shared_candidate_vote(z, centers, log_importance, sigma, labels, masked, n_classes):
    """``_SharedCandidateVote`` in float32 or wider (autocast off; distances as in
    ``pairwise_sq_distances``); the targets and importances are cast here, after the upcast."""
    if labels.is_floating_point():
        targets = labels.to(z.dtype)
    else:
        targets = torch.nn.functional.one_hot(labels, n_classes).to(z.dtype)
    return _SharedCandidateVote.apply(
        z, centers, log_importance.to(z.dtype), sigma, targets, masked, VOTE_FLOOR, torch.is_grad_enabled()
    )


class KernelVoteNet(nn.Module):
    """Embedding f_theta, kernel width sigma, per-centre log-importance and (optionally) centres.

    Shared by NNGK and the Impostor Network. NNGK's centres are not parameters: they are
    f_theta(x_i) of the stored training rows, recomputed by the estimator at every refresh and held
    in its neighbour index. The Impostor Network's "loose" centres are parameters
    (``learn_centers``), one row per centre in ``centers``.

    Parameters
    ----------
    embedding : nn.Module
    n_classes : int
    sigma : float
        Initial kernel width.
    learn_sigma : bool
        Train log sigma with the rest.
    learn_importance : bool
        Train the per-centre log-importance (else every w_i = 1).
    learn_centers : bool
        Hold the centres as a parameter (grown by the estimator), trained with the rest.
    """

    def __init__(
        self,
        *,
        embedding: nn.Module,
        n_classes: int,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        learn_importance: bool = True,
        learn_centers: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.n_classes = n_classes
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.learn_importance = learn_importance
        # One row per stored centre; resized by the estimator as centres are added or dropped.
        self.log_importance = nn.Parameter(torch.zeros(0), requires_grad=learn_importance)
        self.centers = nn.Parameter(torch.zeros(0, 0)) if learn_centers else None

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The query embeddings z = f_theta(x)."""
        return self.embedding(x)

    def log_proba(
        self,
        z: torch.Tensor,
        centers: torch.Tensor,
        center_ids: torch.Tensor,
        labels: torch.Tensor,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. (7) (eq. (9) with every w_i = 1) for queries z (n, e).

        Either each query's own neighbours, ``centers`` (n, k, e) with ``center_ids`` (n, k); or the
        same centres for every query, ``centers`` (N, e) with ``center_ids`` (N,), where ``exclude``
        (n,) names a centre each query must not use (its own, or -1). -1 in ``center_ids`` marks an
        empty slot (a candidate that does not vote). ``labels`` are the centres' classes, (n, k) /
        (N,), or their soft targets, (n, k, C) / (N, C). Gradients reach z, sigma, the importances
        and ``centers`` when they carry gradients (learnable centres); pass refreshed centres
        detached.
        """
        if centers.ndim == 2:
            masked = (center_ids < 0)[None, :].expand(z.shape[0], -1)
            if exclude is not None:
                masked = masked | (center_ids[None, :] == exclude[:, None])
            importance = self.log_importance[center_ids.clamp_min(0)]
            return _shared_candidate_vote(z, centers, importance, self.sigma, labels, masked, self.n_classes)
        else:
            sq = (z[:, None, :] - centers).square().sum(-1)
            masked = center_ids < 0
            log_importance = self.log_importance[center_ids.clamp_min(0)]
        log_w = gaussian_kernel_log_weights(sq, self.sigma, log_importance)
        return kernel_vote_log_proba(log_w.masked_fill(masked, float("-inf")), labels, self.n_classes)
