"""Embedding networks x -> v, shared by every estimator (chosen by the estimators' ``embedding``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


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
    """

    def __init__(
        self,
        *,
        in_features: int,
        hidden_layer_sizes: Sequence[int] = (32,),
        embedding_dim: int = 32,
        final_activation: bool = True,
    ) -> None:
        if in_features < 1 or embedding_dim < 1 or any(h < 1 for h in hidden_layer_sizes):
            raise ValueError("layer sizes must be positive integers")
        super().__init__()
        sizes = [in_features, *hidden_layer_sizes, embedding_dim]
        layers: list[nn.Module] = []
        # NOTE[paper]: Deep Semiparametric Learning, Appendix B: "ReLU nonlinearities for all
        # non-terminal layers"; the embedding is not the model's last layer, so it gets one too.
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2 or final_activation:
                layers.append(nn.ReLU())
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
