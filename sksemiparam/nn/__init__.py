"""Plain torch building blocks shared by the estimators (imports only torch)."""

from .embeddings import ConvEmbedding, MLPEmbedding, make_embedding
from .kernels import (
    in_batch_class_estimate,
    inverse_distance_log_weights,
    pairwise_sq_distances,
    soft_neighbor_class_estimate,
)
from .semiparametric import SemiparametricNet

__all__ = [
    "ConvEmbedding",
    "MLPEmbedding",
    "SemiparametricNet",
    "in_batch_class_estimate",
    "inverse_distance_log_weights",
    "make_embedding",
    "pairwise_sq_distances",
    "soft_neighbor_class_estimate",
]
