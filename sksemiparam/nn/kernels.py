"""Distances and differentiable nearest-neighbour estimates (functional, plain torch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Squared distances below this are treated as this value in d^-tau, so duplicates give a large but
# finite weight (the limit of the kernel) instead of inf/NaN.
MIN_SQ_DISTANCE = 1e-12


def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, m) between rows of ``a`` (n, e) and ``b`` (m, e).

    Uses ||a||^2 + ||b||^2 - 2 a.b (one matrix product, no (n, m, e) intermediate), clamped at 0.
    Differentiable everywhere, including at zero distance, unlike ``cdist``'s square root.
    """
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return sq.clamp_min(0.0)


def inverse_distance_log_weights(
    sq_dist: torch.Tensor, tau: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalised log-weights log(w_ij / sum_j w_ij) with w_ij = d_ij^-tau.

    Computed as a log-softmax of -tau * log(d_ij), which is exact and cannot overflow even when
    d^-tau exceeds float range. ``d`` below ``MIN_SQ_DISTANCE`` is clamped to it.

    Parameters
    ----------
    sq_dist : Tensor of shape (n, m)
        Squared distances d_ij.
    tau : float
        Exponent; larger concentrates the weight on the nearest neighbours.
    mask : BoolTensor of shape (n, m), optional
        True where j may be used as a neighbour of i (e.g. j != i). A row with no allowed
        neighbour gets weight 0 everywhere (log-weight -inf).

    Returns
    -------
    Tensor of shape (n, m)
    """
    scores = -tau * torch.log(sq_dist.clamp_min(MIN_SQ_DISTANCE))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    log_w = torch.log_softmax(scores, dim=1)
    if mask is not None:
        # A row without any allowed neighbour is all -inf and log_softmax gives NaN there.
        empty = ~mask.any(1, keepdim=True)
        log_w = log_w.masked_fill(empty, float("-inf"))
    return log_w


def soft_neighbor_class_estimate(
    sq_dist: torch.Tensor,
    neighbor_labels: torch.Tensor,
    n_classes: int,
    tau: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable nearest-neighbour class estimate of Deep Semiparametric Learning.

    P(c_i = a) = sum_j w_ij 1(c_j = a) / sum_j w_ij, with w_ij = d_ij^-tau over the allowed j.
    Rows with no allowed neighbour get the uniform distribution 1/n_classes (no information).

    Parameters
    ----------
    sq_dist : Tensor of shape (n, m)
        Squared distances from each query i to each candidate neighbour j.
    neighbor_labels : LongTensor of shape (m,) or (n, m)
        Encoded class of each neighbour (shared by all rows, or per row).
    n_classes : int
    tau : float
    mask : BoolTensor of shape (n, m), optional
        Allowed neighbours (see ``inverse_distance_log_weights``).

    Returns
    -------
    Tensor of shape (n, n_classes), rows summing to 1.
    """
    log_w = inverse_distance_log_weights(sq_dist, tau, mask)
    # Weights below the smallest normal float are set to 0: subnormal numbers make every later
    # CPU operation on them (matmul, backward) tens of times slower, for no measurable effect.
    tiny = math.log(torch.finfo(log_w.dtype).tiny)
    w = torch.where(log_w > tiny, log_w.exp(), torch.zeros((), dtype=log_w.dtype, device=log_w.device))
    onehot = F.one_hot(neighbor_labels, n_classes).to(w.dtype)
    if onehot.ndim == 2:
        est = w @ onehot
    else:
        est = torch.einsum("nm,nmk->nk", w, onehot)
    if mask is not None:
        empty = ~mask.any(1, keepdim=True)
        est = torch.where(empty, torch.full_like(est, 1.0 / n_classes), est)
    return est
