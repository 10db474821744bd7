"""The network of Deep Semiparametric Learning (Jain & Lindsey): embedding, neighbour estimate, head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .kernels import ScratchPool, in_batch_class_estimate, soft_neighbor_class_estimate

MODES = ("semiparametric", "parametric", "nonparametric")

ESTIMATE_INPUTS = ("proba", "log_proba")

# log(p) of a class no neighbour votes for, in the nonparametric mode (p clamped to this).
_MIN_PROBA = 1e-12
# ``estimate_input="log_proba"``: the head sees log(c' + this), finite for a class no neighbour
# votes for and within ~9.2 of 0 (a linear head's inputs stay on the embedding's scale).
LOG_ESTIMATE_FLOOR = 1e-4


def resolvable_sq_distances(
    sq: torch.Tensor, q_sq_norm: torch.Tensor, k_sq_norm: torch.Tensor, dim: int
) -> torch.Tensor:
    """Squared distances raised to the float resolution of the vectors they separate.

    A query's embedding carries rounding of ~eps relative to its norm (more or less of it when the
    row is computed alone or in a batch), so squared distances below ~dim * eps * (|q|^2 + |k|^2)
    are rounding; under w = d^-tau such differences would still decide the vote. They all count as
    that floor, i.e. as equally near. ``q_sq_norm`` (n, 1), ``k_sq_norm`` (n, m) or (1, m), ``dim``
    the embedding size. (The same tolerance as the exact neighbour search's.)
    """
    tol = 8 * dim * torch.finfo(sq.dtype).eps
    return torch.maximum(sq, (q_sq_norm + k_sq_norm) * tol)


class SemiparametricNet(nn.Module):
    """Embedding v = f(x), neighbour estimate c' over labelled neighbours, classifier on [v, c'].

    Parameters
    ----------
    embedding : nn.Module
        Maps (n, in_features) to (n, embedding_dim).
    embedding_dim : int
    n_classes : int
    mode : {"semiparametric", "parametric", "nonparametric"}
        ``"parametric"``: head on v only. ``"nonparametric"``: the estimate c' is the output.
    tau : float
        Exponent of the weights w_ij = d_ij^-tau on squared distances d_ij.
    head_layer_sizes : sequence of int
        Hidden widths of the classifier head; ``()`` is one linear layer (the paper's MNIST head).
    neighbor_skip : float or None
        ``"semiparametric"`` mode: add ``s * c'`` to the head's logits, with ``s`` a learnable
        scalar starting at this value (not in the paper; None: the paper's model).
    estimate_input : {"proba", "log_proba"}
        ``"semiparametric"`` mode: what the head (and the skip) see of the estimate: c' itself (the
        paper's), or log(c' + ``LOG_ESTIMATE_FLOOR``). With ``"log_proba"`` and ``neighbor_skip=1``
        the output is softmax(head + log c'), proportional to c' exp(head): the nonparametric
        estimate corrected by the head, which starts as the estimate itself.
    """

    estimate_input = "proba"  # (models pickled before the option was added)

    def __init__(
        self,
        *,
        embedding: nn.Module,
        embedding_dim: int,
        n_classes: int,
        mode: str = "semiparametric",
        tau: float = 2.0,
        head_layer_sizes: Sequence[int] = (),
        neighbor_skip: float | None = None,
        estimate_input: str = "proba",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
        if estimate_input not in ESTIMATE_INPUTS:
            raise ValueError(f"`estimate_input` must be one of {ESTIMATE_INPUTS}, got {estimate_input!r}")
        if n_classes < 2:
            raise ValueError(f"`n_classes` must be >= 2, got {n_classes}")
        super().__init__()
        self.embedding = embedding
        self.n_classes = n_classes
        self.mode = mode
        self.tau = float(tau)
        self.estimate_input = estimate_input
        self._scratch = ScratchPool()  # (B, B) buffers of the in-batch estimate, reused every step
        if mode == "nonparametric":
            self.head = None
        else:
            width = embedding_dim + (n_classes if mode == "semiparametric" else 0)
            layers: list[nn.Module] = []
            for h in head_layer_sizes:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, n_classes))
            self.head = nn.Sequential(*layers)
        self.neighbor_skip = None
        if mode == "semiparametric" and neighbor_skip is not None:
            self.neighbor_skip = nn.Parameter(torch.tensor(float(neighbor_skip)))

    def __getstate__(self):
        state = super().__getstate__().copy()
        state["_scratch"] = ScratchPool()  # scratch memory is not part of the model
        return state

    @property
    def uses_neighbors(self) -> bool:
        return self.mode != "parametric"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_features) -> (n, embedding_dim)."""
        return self.embedding(x)

    def in_batch_estimate(self, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Neighbour estimate of each row from the other rows of its batch (j != i). (n, n_classes)."""
        # NOTE[paper]: Algorithm 1 sums w_ij = d_ij^-tau over j != i without normalising; we normalise
        # over j so the estimate is a distribution (the paper calls it P(c_i = a)). A batch of one row
        # has no neighbour and gets the uniform distribution.
        return in_batch_class_estimate(v, y, self.n_classes, self.tau, self._scratch)

    def memory_estimate(
        self, v: torch.Tensor, neighbor_keys: torch.Tensor, neighbor_labels: torch.Tensor
    ) -> torch.Tensor:
        """Neighbour estimate from retrieved memory entries.

        ``neighbor_keys`` (n, k, e) and ``neighbor_labels`` (n, k) are each row's own neighbours;
        distances are recomputed here, so gradients reach ``v``.
        """
        sq = (v[:, None, :] - neighbor_keys).square().sum(-1)
        sq = resolvable_sq_distances(
            sq, v.square().sum(1)[:, None], neighbor_keys.square().sum(-1), v.shape[1]
        )
        return soft_neighbor_class_estimate(sq, neighbor_labels, self.n_classes, self.tau)

    def output(self, v: torch.Tensor, estimate: torch.Tensor | None) -> torch.Tensor:
        """Log-probabilities (n, n_classes) from the embedding and the neighbour estimate."""
        if self.mode == "nonparametric":
            # NOTE[paper]: the nonparametric baseline "outputs the results of the nearest-neighbor
            # step"; trained with cross-entropy on that estimate, clamped so log(0) stays finite.
            return torch.log(estimate.clamp_min(_MIN_PROBA))
        if self.mode == "parametric":
            return torch.log_softmax(self.head(v), dim=1)
        if self.estimate_input == "log_proba":
            estimate = torch.log(estimate + LOG_ESTIMATE_FLOOR)
        logits = self.head(torch.cat([v, estimate], dim=1))
        if self.neighbor_skip is not None:
            logits = logits + self.neighbor_skip * estimate
        return torch.log_softmax(logits, dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training forward pass: log-probabilities with in-batch neighbour estimates."""
        v = self.embed(x)
        estimate = self.in_batch_estimate(v, y) if self.uses_neighbors else None
        return self.output(v, estimate)
