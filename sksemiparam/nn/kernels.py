"""Distances and differentiable nearest-neighbour estimates (functional, plain torch)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Squared distances below this are treated as this value in d^-tau, so duplicates give a large but
# finite weight (the limit of the kernel) instead of inf/NaN.
MIN_SQ_DISTANCE = 1e-12


def full_precision(fn):
    """Run ``fn`` with autocast off and its half-precision tensor arguments upcast to float32.

    Under mixed precision, autocast would compute ||a||^2 + ||b||^2 - 2 a.b in bfloat16/float16,
    whose 8-11 bit mantissas cancel catastrophically for near neighbours; distances, kernel weights
    and neighbour estimates stay float32 (the network before them runs in the lower precision).
    Without autocast this is a plain call.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        if not torch.is_autocast_enabled(device_type):
            return fn(*args, **kwargs)
        args = [
            a.float() if isinstance(a, torch.Tensor) and a.dtype in (torch.float16, torch.bfloat16) else a
            for a in args
        ]
        with torch.autocast(device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


@full_precision
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


class ScratchPool:
    """Reusable scratch tensors, handed out by name and shape, one holder at a time.

    A fresh (1000, 1000) float buffer costs about a millisecond of page faults on first touch on a
    CPU, more than the arithmetic done in it. ``take`` returns a buffer last ``give``-n back, or a new
    one; a buffer still held (e.g. saved for a backward pass that has not run) is never handed out
    twice, so reuse is safe even when forward passes overlap.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor, dtype=None) -> torch.Tensor:
        key = (name, tuple(shape), dtype or like.dtype, like.device)
        buffer = self._free.pop(key, None)
        return buffer if buffer is not None else torch.empty(key[1], dtype=key[2], device=key[3])

    def give(self, name: str, *buffers: torch.Tensor) -> None:
        for i, buffer in enumerate(buffers):
            self._free[(f"{name}{i}", tuple(buffer.shape), buffer.dtype, buffer.device)] = buffer

    def clear(self) -> None:
        self._free.clear()


def _cpu_kernels(v: torch.Tensor):
    """The numba kernels of ``_cpu_kernels`` for a CPU float32/float64 ``v``, else None (torch's ops)."""
    if v.device.type != "cpu" or v.dtype not in (torch.float32, torch.float64):
        return None
    from .. import _cpu_kernels  # lazy: numba's import and first compile cost about a second

    return _cpu_kernels


def _r_max(tau: float, dtype: torch.dtype) -> float:
    """Cap on r = d / d_min that keeps r^-tau a normal float: subnormals slow every later CPU
    operation tens of times. (For tau < ~1 no float r is that large: the cap is then the largest
    float.)"""
    finfo = torch.finfo(dtype)
    return min(math.exp(min((-math.log(finfo.tiny) - 2.0) / tau, 700.0)), finfo.max)


class _InBatchEstimate(torch.autograd.Function):
    """``soft_neighbor_class_estimate`` of every row from the other rows of a batch, with a fused
    hand-written backward.

    Autograd through the generic version stores and revisits about twenty (B, B) intermediates; at
    batch 1000 that made the training step ~10x the plain network's. Here the forward works in place
    on two (B, B) buffers and the backward makes a handful of passes and three matrix products. On a
    CPU the elementwise passes are numba kernels, one sweep per row (``_cpu_kernels``); elsewhere
    (CUDA) they are torch's in-place operators.
    """

    @staticmethod
    def forward(ctx, v, onehot, tau, pool, grad_enabled):
        n = v.shape[0]
        ctx.tau, ctx.pool = tau, pool
        r_max = _r_max(tau, v.dtype)
        compiled = _cpu_kernels(v)
        ctx.compiled = compiled
        if compiled is not None:
            # d (in place of v v^T), w, s and d_min by the numba kernel; the products by torch.
            scalar = np.float32 if v.dtype == torch.float32 else np.float64
            d = torch.mm(v, v.T, out=pool.take("f0", (n, n), v))
            w = pool.take("f1", (n, n), v)
            s, d_min = v.new_empty(n), v.new_empty(n)
            compiled.forward(
                d.numpy(), (v * v).sum(1).numpy(), scalar(tau), scalar(1.0 / r_max),
                scalar(MIN_SQ_DISTANCE), scalar(math.inf), w.numpy(), s.numpy(), d_min.numpy(),
            )  # fmt: skip
            s = s[:, None]
            est = torch.mm(w, onehot).div_(s)
            if grad_enabled and ctx.needs_input_grad[0]:
                ctx.save_for_backward(v, onehot, w, d, d_min, s, est)
            else:
                pool.give("f", d, w)
            return est
        sq = (v * v).sum(1)
        # d_ij = |v_i|^2 + |v_j|^2 - 2 v_i.v_j, built in place.
        d = torch.addmm(sq[None, :], v, v.T, beta=1.0, alpha=-2.0, out=pool.take("f0", (n, n), v))
        d.add_(sq[:, None])
        # d^-tau is flat below the clamp: no gradient there.
        clamped = torch.lt(d, MIN_SQ_DISTANCE, out=pool.take("f2", (n, n), v, torch.bool))
        d.clamp_min_(MIN_SQ_DISTANCE).fill_diagonal_(float("inf"))  # j != i
        # Weights relative to the nearest neighbour: the estimate is invariant to a per-row scale,
        # and r = d / d_min >= 1 keeps r^-tau <= 1 (no overflow). r is capped (``_r_max``).
        d_min = d.amin(1, keepdim=True)
        r = d.div_(d_min).fill_diagonal_(1.0).clamp_max_(r_max)
        w = torch.pow(r, -tau, out=pool.take("f1", (n, n), v)).fill_diagonal_(0.0)
        s = w.sum(1, keepdim=True)
        est = (w @ onehot).div_(s)
        if grad_enabled and ctx.needs_input_grad[0]:
            ctx.save_for_backward(v, onehot, w, r, d_min, s, est, clamped)
        else:
            pool.give("f", r, w, clamped)
        return est

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        tau, pool, compiled = ctx.tau, ctx.pool, ctx.compiled
        if compiled is not None:
            v, onehot, w, d, d_min, s, est = ctx.saved_tensors
            n = v.shape[0]
            scalar = np.float32 if v.dtype == torch.float32 else np.float64
            g = grad / s
            # a_ij = g_i . y_j, overwritten in place with dL/dd_ij by the kernel.
            m = torch.mm(g, onehot.T, out=pool.take("b0", (n, n), v))
            sums = v.new_empty(n)
            compiled.backward(
                m.numpy(), (g * est).sum(1).numpy(), d.numpy(), w.numpy(), d_min.numpy(),
                scalar(tau), scalar(1.0 / _r_max(tau, v.dtype)), scalar(MIN_SQ_DISTANCE), sums.numpy(),
            )  # fmt: skip
            # d_ij = |v_i - v_j|^2:  dL/dv = 2 [(rowsum + colsum)(m) v - m v - m^T v].
            grad_v = torch.addmm(sums[:, None] * v, m, v, alpha=-1.0).addmm_(m.T, v, alpha=-1.0)
            pool.give("f", d, w)
            pool.give("b", m)
            return grad_v.mul_(2.0), None, None, None, None
        v, onehot, w, r, d_min, s, est, clamped = ctx.saved_tensors
        n = v.shape[0]
        # est = (w @ Y) / s with s = rowsum(w):  dL/dw_ij = (g_i . y_j - g_i . est_i) / s_i.
        g = grad / s
        m = torch.addmm(-(g * est).sum(1, keepdim=True), g, onehot.T, out=pool.take("b0", (n, n), v))
        # w = (d / d_min)^-tau:  dw/dd = -tau w / d = -tau w / (r d_min).
        m.mul_(w).div_(r).mul_(-tau / d_min)
        m.masked_fill_(clamped, 0.0)
        # d_ij = |v_i - v_j|^2:  dL/dv = 2 [(rowsum + colsum)(m) v - m v - m^T v].
        grad_v = (m.sum(1) + m.sum(0))[:, None] * v - m @ v - m.T @ v
        pool.give("f", r, w, clamped)
        pool.give("b", m)
        return 2.0 * grad_v, None, None, None, None


@full_precision
def in_batch_class_estimate(
    v: torch.Tensor, labels: torch.Tensor, n_classes: int, tau: float, pool: ScratchPool | None = None
) -> torch.Tensor:
    """Neighbour class estimate of each row of a batch from all the other rows (j != i).

    Equal to ``soft_neighbor_class_estimate(pairwise_sq_distances(v, v), labels, n_classes, tau,
    mask=~eye)``, with a fused backward (see ``_InBatchEstimate``). A batch of one row has no
    neighbour and gets the uniform distribution.

    Parameters
    ----------
    v : Tensor of shape (B, e)
        Embeddings of the batch.
    labels : LongTensor of shape (B,)
    n_classes : int
    tau : float
    pool : ScratchPool, optional
        Where to keep the (B, B) scratch buffers between calls (a training loop passes the same
        pool every step); a new pool by default.

    Returns
    -------
    Tensor of shape (B, n_classes), rows summing to 1.
    """
    if v.shape[0] < 2:
        return torch.full((v.shape[0], n_classes), 1.0 / n_classes, dtype=v.dtype, device=v.device)
    onehot = torch.zeros(v.shape[0], n_classes, dtype=v.dtype, device=v.device)
    onehot.scatter_(1, labels[:, None], 1.0)  # not F.one_hot: its range check costs ~50 us a call
    pool = pool if pool is not None else ScratchPool()
    # (Under no_grad ctx.needs_input_grad still follows requires_grad: the buffers go back anyway.)
    return _InBatchEstimate.apply(v, onehot, float(tau), pool, torch.is_grad_enabled())
