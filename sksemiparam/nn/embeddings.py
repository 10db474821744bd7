"""Embedding networks x -> v, shared by every estimator (chosen by the estimators' ``embedding``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


class PeriodicEmbedding(nn.Module):
    """PLR embeddings of numerical features (Gorishniy, Rubachev & Babenko, NeurIPS 2022).

    Each feature x_j becomes a vector of its own: periodic features
    v_j = [cos(2 pi c_j1 x_j), ..., cos(2 pi c_jk x_j), sin(2 pi c_j1 x_j), ..., sin(2 pi c_jk x_j)]
    with trainable frequencies c_j (k per feature, initialised from N(0, ``frequency_scale^2``)
    truncated at 3 standard deviations), then a linear layer and ReLU ("P", "L", "R"), and the
    features' vectors are concatenated: (n, in_features) -> (n, in_features * d_embedding). The
    linear layer is each feature's own (the paper's PLR) or, with ``lite``, one shared by every
    feature (the "lite" variant ModernNCA and TabM use, far fewer parameters).

    Parameters
    ----------
    in_features : int
    n_frequencies : int, default=48
        k, the frequencies per feature.
    frequency_scale : float, default=0.01
        Standard deviation of the frequencies' initialisation; the paper's most important
        hyperparameter (too large and the embedding is noise for standardised inputs).
    d_embedding : int, default=24
        Size of each feature's vector.
    lite : bool, default=True
        One linear layer shared by every feature instead of one per feature.
    """

    def __init__(
        self,
        *,
        in_features: int,
        n_frequencies: int = 48,
        frequency_scale: float = 0.01,
        d_embedding: int = 24,
        lite: bool = True,
    ) -> None:
        if min(in_features, n_frequencies, d_embedding) < 1:
            raise ValueError("`in_features`, `n_frequencies` and `d_embedding` must be positive integers")
        if not frequency_scale > 0:
            raise ValueError(f"`frequency_scale` must be > 0, got {frequency_scale!r}")
        super().__init__()
        self.frequencies = nn.Parameter(torch.empty(in_features, n_frequencies))
        nn.init.trunc_normal_(
            self.frequencies, 0.0, frequency_scale, -3 * frequency_scale, 3 * frequency_scale
        )
        width = 2 * n_frequencies
        if lite:
            self.linear = nn.Linear(width, d_embedding)
            self.weight = self.bias = None
        else:  # one (2k, d) map per feature, initialised as nn.Linear initialises its weights
            self.linear = None
            bound = 1.0 / math.sqrt(width)
            self.weight = nn.Parameter(torch.empty(in_features, width, d_embedding).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(in_features, d_embedding).uniform_(-bound, bound))
        self.out_features = in_features * d_embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_features) -> (n, in_features * d_embedding)."""
        angles = (2 * math.pi) * x[:, :, None] * self.frequencies  # (n, F, k)
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (n, F, 2k)
        if self.linear is not None:
            out = self.linear(periodic)
        else:
            out = torch.einsum("nfw,fwd->nfd", periodic, self.weight) + self.bias
        return torch.relu(out).flatten(1)


class _BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that normalises a one-row training batch with its running statistics (a batch
    of one has no variance: torch raises), e.g. the last mini-batch of an epoch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class MLPEmbedding(nn.Module):
    """Dense ReLU network mapping (n, in_features) to (n, embedding_dim).

    Parameters
    ----------
    in_features : int
    hidden_layer_sizes : sequence of int
        Widths of the hidden layers, each followed by ReLU. ``()`` gives a single linear map.
    embedding_dim : int
    final_activation : bool
        Apply ReLU to the embedding too (Deep Semiparametric Learning: "ReLU for all non-terminal
        layers"); Meta-Neighborhoods removes it so embeddings can be negative.
    batch_norm : bool, default=False
        Batch normalisation between each hidden layer's linear map and its ReLU.
    dropout : float, default=0.0
        Dropout after each hidden layer's ReLU.
    periodic : dict or None, default=None
        PLR embeddings of the input features first (``PeriodicEmbedding``, these its keyword
        arguments; ``{}`` for its defaults).
    """

    def __init__(
        self,
        *,
        in_features: int,
        hidden_layer_sizes: Sequence[int] = (32,),
        embedding_dim: int = 32,
        final_activation: bool = True,
        batch_norm: bool = False,
        dropout: float = 0.0,
        periodic: dict | None = None,
    ) -> None:
        if in_features < 1 or embedding_dim < 1 or any(h < 1 for h in hidden_layer_sizes):
            raise ValueError("layer sizes must be positive integers")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        super().__init__()
        layers: list[nn.Module] = []
        if periodic is not None:
            layers.append(PeriodicEmbedding(in_features=in_features, **periodic))
            in_features = layers[0].out_features
        sizes = [in_features, *hidden_layer_sizes, embedding_dim]
        # NOTE[paper]: Deep Semiparametric Learning, Appendix B: "ReLU nonlinearities for all
        # non-terminal layers"; the embedding is not the model's last layer, so it gets one too.
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            hidden = i < len(sizes) - 2
            if hidden and batch_norm:
                layers.append(_BatchNorm1d(b))
            if hidden or final_activation:
                layers.append(nn.ReLU())
            if hidden and dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)
        self.out_features = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_features) -> (n, embedding_dim)."""
        return self.layers(x)


class ConvEmbedding(nn.Module):
    """The image network of Deep Semiparametric Learning, Appendix B.

    Two pairs of 3x3 convolutions (32 then 64 channels, ReLU), each pair followed by 2x2 max pooling
    and 25% dropout, then a dense layer to the embedding. Input rows are flattened images in
    channel-major order (as CIFAR and MNIST files store them) and are reshaped to ``image_shape``.

    Parameters
    ----------
    image_shape : tuple of int
        ``(channels, height, width)``, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
    embedding_dim : int, default=128
    dropout : float, default=0.25
    final_activation : bool, default=True
    """

    def __init__(
        self,
        *,
        image_shape: Sequence[int],
        embedding_dim: int = 128,
        dropout: float = 0.25,
        final_activation: bool = True,
    ) -> None:
        if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
            raise ValueError(f"`image_shape` must be (channels, height, width), got {tuple(image_shape)}")
        c, h, w = (int(s) for s in image_shape)
        if h < 4 or w < 4:
            raise ValueError(f"`image_shape` {tuple(image_shape)} is too small for two 2x2 poolings")
        super().__init__()
        self.image_shape = (c, h, w)

        def pair(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            ]

        self.features = nn.Sequential(*pair(c, 32), *pair(32, 64), nn.Flatten())
        flat = 64 * (h // 2 // 2) * (w // 2 // 2)
        head: list[nn.Module] = [nn.Linear(flat, embedding_dim)]
        if final_activation:
            head.append(nn.ReLU())
        self.head = nn.Sequential(*head)
        self.out_features = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, prod(image_shape)) -> (n, embedding_dim)."""
        return self.head(self.features(x.reshape(x.shape[0], *self.image_shape)))


def make_embedding(
    embedding: str | Callable[..., nn.Module],
    *,
    in_features: int,
    hidden_layer_sizes: Sequence[int],
    embedding_dim: int,
    image_shape: Sequence[int] | None,
    final_activation: bool = True,
) -> nn.Module:
    """Build the embedding network an estimator's ``embedding`` parameter names.

    ``embedding`` is ``"mlp"``, ``"conv"`` (needs ``image_shape`` whose product is ``in_features``),
    ``"identity"`` (the features themselves; ``embedding_dim`` is then ``in_features``) or a
    callable ``factory(in_features, embedding_dim) -> nn.Module`` returning a module that maps
    (n, in_features) to (n, embedding_dim).
    """
    if embedding == "mlp":
        return MLPEmbedding(
            in_features=in_features,
            hidden_layer_sizes=tuple(hidden_layer_sizes),
            embedding_dim=embedding_dim,
            final_activation=final_activation,
        )
    if embedding == "identity":
        # The raw features are the embedding (MbPA's permuted-MNIST setting uses the pixels).
        return nn.Identity()
    if embedding == "conv":
        if image_shape is None:
            raise ValueError("`embedding`='conv' needs `image_shape`, e.g. (1, 28, 28) or (3, 32, 32)")
        if math.prod(image_shape) != in_features:
            raise ValueError(
                f"`image_shape`={tuple(image_shape)} holds {math.prod(image_shape)} values but X has "
                f"{in_features} features"
            )
        return ConvEmbedding(
            image_shape=image_shape, embedding_dim=embedding_dim, final_activation=final_activation
        )
    if callable(embedding):
        module = embedding(in_features, embedding_dim)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"the `embedding` factory must return a torch.nn.Module, got {type(module).__name__}"
            )
        was_training = module.training
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros(2, in_features))
        module.train(was_training)
        if out.shape != (2, embedding_dim):
            raise ValueError(
                f"the `embedding` factory's module maps (2, {in_features}) to {tuple(out.shape)}; "
                f"it must return (n, embedding_dim) = (2, {embedding_dim})"
            )
        return module
    raise ValueError(f"`embedding` must be 'mlp', 'conv', 'identity' or a callable, got {embedding!r}")
